//! Any text as a config file, and `NAME=VALUE` lines after a NUL as the environment: a config or
//! errors that name their key; never a panic. An accepted config passes its own validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamlr::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("STREAMLR__{k}"), v.to_string()))
        .collect();
    match Config::from_sources(Some(("fuzz.toml", file)), env) {
        Ok(c) => assert!(c.validate().is_empty()),
        Err(ConfigError::Invalid(problems)) => assert!(!problems.is_empty()),
        Err(_) => {}
    }
});
