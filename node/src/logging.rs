//! Log lines on stderr: the filter (`BAZAAR_LOG`, with the framework's own chatter kept at warn
//! unless named) and the format (`log_format`: text for a person, JSON for a collector).

use crate::config::LogFormat;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// The filter when `BAZAAR_LOG` is unset: our info lines; the libraries' warnings only.
const DEFAULT_FILTER: &str = "info,sqlx=warn,rskafka=warn";

/// ractor logs every actor start and stop and every session event at info and warn: noise for an
/// operator (our own lines say what matters), kept at warn unless `BAZAAR_LOG` names them.
const FRAMEWORK_QUIET: &str = "ractor=warn,ractor_cluster=warn";

/// The format chosen at [`init`]; unset before it.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The filter directives for a `BAZAAR_LOG` value (`None`: unset).
pub fn filter_directives(bazaar_log: Option<&str>) -> String {
    let Some(given) = bazaar_log.map(str::trim).filter(|s| !s.is_empty()) else {
        return format!("{DEFAULT_FILTER},{FRAMEWORK_QUIET}");
    };
    if given.contains("ractor") {
        return given.to_owned();
    }
    // A bare level quieter than warn (`error`, `off`) already quiets ractor: adding `ractor=warn`
    // would make it louder than asked.
    let bare_level = given.split(',').map(str::trim).rfind(|d| !d.contains('=') && !d.contains('['));
    match bare_level.map(str::to_ascii_lowercase).as_deref() {
        Some("error" | "off") => given.to_owned(),
        _ => format!("{given},{FRAMEWORK_QUIET}"),
    }
}

/// Installs the stderr subscriber in `format`, with the filter of `BAZAAR_LOG` (the default
/// where it is unset or unreadable).
pub fn init(format: LogFormat) {
    let bazaar_log = std::env::var("BAZAAR_LOG").ok();
    let filter = EnvFilter::try_new(filter_directives(bazaar_log.as_deref()))
        .unwrap_or_else(|_| EnvFilter::new(filter_directives(None)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // Colour codes only for a person at a terminal, not in a log file or a collector.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // `message` beside `level` and `target` at the top of each object, where collectors
        // look for it, rather than nested in `fields`.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_ansi(false).init(),
    }
    let _ = FORMAT.set(format);
}

/// The format from `BAZAAR_LOG_FORMAT` alone, for the commands that read no settings.
pub fn format_from_env() -> LogFormat {
    match std::env::var("BAZAAR_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

/// Writes why the process stops: a log line in JSON (so every stderr line stays JSON for a
/// collector), else `bazaar: ...` with its causes for a person.
///
/// Written straight to stderr, past the filter: `BAZAAR_LOG=off` quiets the logs, not the reason
/// a start failed. Before [`init`] (a setting refused while loading) the format comes from
/// `BAZAAR_LOG_FORMAT`.
pub fn fatal(error: &anyhow::Error) {
    let format = FORMAT.get().copied().unwrap_or_else(format_from_env);
    match format {
        LogFormat::Json => {
            let line = serde_json::json!({
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": "ERROR",
                "target": "bazaar",
                "message": format!("bazaar stopped: {error:#}"),
                "reason": format!("{error:#}"),
            });
            eprintln!("{line}");
        }
        LogFormat::Text => eprintln!("bazaar: {error:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ractor_stays_at_warn_unless_the_filter_names_it_or_is_quieter() {
        assert_eq!(filter_directives(None), "info,sqlx=warn,rskafka=warn,ractor=warn,ractor_cluster=warn");
        assert_eq!(filter_directives(Some(" ")), filter_directives(None));
        assert_eq!(filter_directives(Some("debug")), "debug,ractor=warn,ractor_cluster=warn");
        assert_eq!(
            filter_directives(Some("info,bazaar::access=off")),
            "info,bazaar::access=off,ractor=warn,ractor_cluster=warn"
        );
        assert_eq!(filter_directives(Some("debug,ractor=debug")), "debug,ractor=debug");
        assert_eq!(filter_directives(Some("info,ractor_cluster=info")), "info,ractor_cluster=info");
        assert_eq!(filter_directives(Some("error")), "error");
        assert_eq!(filter_directives(Some("OFF")), "OFF");
        for directives in [None, Some("debug"), Some("warn,bazaar_node=debug")] {
            assert!(EnvFilter::try_new(filter_directives(directives)).is_ok());
        }
    }
}
