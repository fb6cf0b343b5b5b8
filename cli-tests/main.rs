//! The command line: wrong flags and inputs exit 2 with a message naming the flag and a
//! usage hint, never a panic.

use std::process::Command;

fn spacepulse(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spacepulse"))
        .args(args)
        .output()
        .expect("run spacepulse");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn wrong_flags_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["ingest", "--lake", lake], "--brokers"),
        (
            &[
                "ingest",
                "--brokers",
                "127.0.0.1:1",
                "--flush-rows",
                "0",
                "--lake",
                lake,
            ],
            "--flush-rows",
        ),
        (
            &[
                "ingest",
                "--brokers",
                "127.0.0.1:1",
                "--flush-secs",
                "0",
                "--lake",
                lake,
            ],
            "--flush-secs",
        ),
        (
            &[
                "ingest",
                "--brokers",
                "127.0.0.1:1",
                "-X",
                "novalue",
                "--lake",
                lake,
            ],
            "KEY=VALUE",
        ),
        (
            &[
                "ingest",
                "--from-file",
                "/nonexistent/events.ndjson",
                "--lake",
                lake,
            ],
            "/nonexistent/events.ndjson",
        ),
        (
            &["lake", "vacuum", "--retain", "5x", "--lake", lake],
            "unknown unit",
        ),
        (
            &["lake", "compact", "--target-mib", "0", "--lake", lake],
            "--target-mib",
        ),
        (&["no-such-command"], "no-such-command"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = spacepulse(args);
        assert_eq!(code, 2, "{args:?}: exit {code}\n{out}{err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr does not name {needle:?}: {err}"
        );
        assert!(
            err.contains("--help") || err.contains("Usage"),
            "{args:?}: no usage hint: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn an_empty_directory_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = spacepulse(&[
        "ingest",
        "--from-file",
        dir.path().to_str().unwrap(),
        "--lake",
        dir.path().join("lake").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no .ndjson"), "{err}");
}
