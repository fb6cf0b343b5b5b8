//! Errors of the datasets crate.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{failed} of {sent} messages were not delivered; first error: {first}")]
    Undelivered {
        sent: u64,
        failed: u64,
        first: String,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Asked to stop (a signal) while messages were waiting for the broker.
    #[error("stopped")]
    Stopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl lake::Classify for Error {
    fn class(&self) -> lake::Class {
        match self {
            Error::Kafka(_) | Error::Undelivered { .. } => lake::Class::Unavailable,
            Error::Io(e) => lake::error::io_class(e),
            // Stopped by a signal: not a failure of anyone's.
            Error::Stopped => lake::Class::Unavailable,
        }
    }
}
