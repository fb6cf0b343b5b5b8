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
    let fresh = dir.path().join("fresh");
    let fresh = fresh.to_str().unwrap();
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
        (
            &["jobs", "run", "--lake", lake, "--tz", "Mars/Base"],
            "Mars/Base",
        ),
        (
            &["jobs", "run", "--lake", lake, "--from", "28/04/2015"],
            "--from",
        ),
        (&["jobs", "run", "--lake", lake, "dau"], "unknown job"),
        (&["jobs", "run", "--lake", fresh], "no events table"),
        (
            &[
                "campaigns",
                "add",
                "c",
                "--lake",
                lake,
                "--account",
                "a",
                "--start",
                "noon",
            ],
            "--start",
        ),
        (
            &[
                "campaigns",
                "add",
                "c",
                "--lake",
                lake,
                "--account",
                "a",
                "--start",
                "2015-04-28T10:00:00+08:00",
                "--mode",
                "last",
            ],
            "--mode",
        ),
        (&["campaigns", "remove", "nope", "--lake", lake], "nope"),
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

#[test]
fn bad_generator_options_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gen");
    let (code, _, err) = spacepulse(&[
        "datasets",
        "generate",
        "--out",
        out.to_str().unwrap(),
        "--rows",
        "10",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--rows 10 is too small"), "{err}");
    assert!(!out.exists(), "output left behind by a rejected run");
}

#[test]
fn a_config_file_sets_defaults_that_variables_and_flags_override() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = dir.path().join("from-file");
    let from_flag = dir.path().join("from-flag");
    let config = dir.path().join("spacepulse.toml");
    std::fs::write(
        &config,
        format!("lake = {:?}\ntz = \"UTC\"\n", from_file.to_str().unwrap()),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let add = |extra: &[&str]| {
        let mut args = vec![
            "campaigns",
            "add",
            "c1",
            "--account",
            "a",
            "--start",
            "2015-04-28T10:00:00+08:00",
            "--config",
            config,
        ];
        args.extend_from_slice(extra);
        spacepulse(&args)
    };
    let (code, out, err) = add(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        from_file.join("_registry.sqlite").exists(),
        "the file's lake is used: {out}"
    );
    let (code, out, err) = add(&["--lake", from_flag.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        from_flag.join("_registry.sqlite").exists(),
        "the flag wins: {out}"
    );
    let env_lake = dir.path().join("from-env");
    let out = Command::new(env!("CARGO_BIN_EXE_spacepulse"))
        .args(["campaigns", "list", "--config", config])
        .env("SPACEPULSE_LAKE", &env_lake)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        env_lake.join("_registry.sqlite").exists(),
        "the variable wins over the file"
    );

    std::fs::write(dir.path().join("bad.toml"), "lake = \"x\"\nlakes = \"y\"\n").unwrap();
    let bad = dir.path().join("bad.toml");
    let (code, _, err) = spacepulse(&["campaigns", "list", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown key \"lakes\""), "{err}");
    let (code, _, err) = spacepulse(&["campaigns", "list", "--config", "/nonexistent.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent.toml"), "{err}");
}

/// Exit 2 is for usage alone: what the caller named but is not there, a change the registry
/// already holds, and a registry written by a newer spacepulse exit 1, without the usage hint.
#[test]
fn only_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let add = [
        "accounts", "add", "acme", "--kind", "official", "--lake", lake,
    ];
    let (code, out, err) = spacepulse(&add);
    assert_eq!(code, 0, "{out}{err}");
    for (args, says) in [
        (&add[..], "already exists"),
        (
            &[
                "accounts", "verify", "nobody", "--reason", "x", "--lake", lake,
            ][..],
            "no account",
        ),
    ] {
        let (code, _, err) = spacepulse(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(says) && !err.contains("hint:"),
            "{args:?}: {err}"
        );
    }
    // A wrong value of a flag is still the caller's to fix.
    let (code, _, err) = spacepulse(&["accounts", "add", "x", "--kind", "emperor", "--lake", lake]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("hint: spacepulse --help"), "{err}");

    // A registry whose schema is newer than this program's (the header's user_version, at
    // byte 60, big-endian): an operator's matter, not a usage error.
    let registry = dir.path().join("lake").join("_registry.sqlite");
    let mut bytes = std::fs::read(&registry).unwrap();
    bytes[60..64].copy_from_slice(&99u32.to_be_bytes());
    std::fs::write(&registry, bytes).unwrap();
    let (code, _, err) = spacepulse(&["accounts", "list", "--lake", lake]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("schema version 99") && !err.contains("hint:"),
        "{err}"
    );
}
