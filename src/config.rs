//! Configuration in layers: built-in defaults, then a TOML file, then `SPACEPULSE_*`
//! variables, then flags. The file's keys are the variables' names without the prefix
//! (`lake` for `SPACEPULSE_LAKE`); a key becomes the default of every flag read from that
//! variable, unless the variable itself is set, so flags and variables still win.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Command;

/// The file the user named (`--config FILE`, `--config=FILE`, `SPACEPULSE_CONFIG`), or
/// `./spacepulse.toml` if it exists.
pub fn config_path(args: &[OsString]) -> Option<(PathBuf, bool)> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(|p| (PathBuf::from(p), true));
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some((PathBuf::from(p), true));
        }
    }
    if let Some(p) = std::env::var_os("SPACEPULSE_CONFIG") {
        return Some((PathBuf::from(p), true));
    }
    let local = Path::new("spacepulse.toml");
    local.exists().then(|| (local.to_path_buf(), false))
}

/// Reads the file into `SPACEPULSE_<KEY>` → value.
pub fn load(path: &Path, known: &[String]) -> Result<BTreeMap<String, String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let var = format!("SPACEPULSE_{}", key.to_ascii_uppercase().replace('-', "_"));
        if !known.contains(&var) || var == "SPACEPULSE_CONFIG" {
            let keys: Vec<String> = known
                .iter()
                .filter(|k| *k != "SPACEPULSE_CONFIG")
                .map(|k| k.trim_start_matches("SPACEPULSE_").to_ascii_lowercase())
                .collect();
            return Err(format!(
                "--config {}: unknown key {key:?}; known keys: {}",
                path.display(),
                keys.join(", ")
            ));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(format!(
                    "--config {}: {key}: expected a string, number or boolean, got {}",
                    path.display(),
                    other.type_str()
                ));
            }
        };
        out.insert(var, value);
    }
    Ok(out)
}

/// Every variable name the command line reads.
pub fn known_vars(cmd: &Command) -> Vec<String> {
    let mut out: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for sub in cmd.get_subcommands() {
        out.extend(known_vars(sub));
    }
    out.sort();
    out.dedup();
    out
}

/// Makes the file's values the defaults of the flags read from the same variables, where the
/// variable is not set.
pub fn apply(cmd: Command, values: &BTreeMap<String, String>) -> Command {
    let mut cmd = cmd;
    let ids: Vec<(clap::Id, String)> = cmd
        .get_arguments()
        .filter_map(|a| {
            a.get_env()
                .map(|e| (a.get_id().clone(), e.to_string_lossy().into_owned()))
        })
        .collect();
    for (id, var) in ids {
        if let Some(v) = values.get(&var)
            && std::env::var_os(&var).is_none()
        {
            // Parsed once per process: leaking the few strings keeps clap's lifetimes simple.
            let v: &'static str = Box::leak(v.clone().into_boxed_str());
            cmd = cmd.mut_arg(id, |a| a.default_value(v).required(false));
        }
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |s| apply(s, values));
    }
    cmd
}
