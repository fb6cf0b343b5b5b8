//! The dashboard's tests: one binary (see DESIGN.md, "one integration-test binary per crate").

mod api;
mod fixture;
mod live;
mod pages;
