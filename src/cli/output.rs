//! Printing results as aligned tables or JSON.

use serde_json::Value;

use super::Format;

/// A time in milliseconds since the epoch as a person reads it in a table: UTC, to the second
/// (`2026-11-27T18:10:09Z`); `-` for none (0). JSON output keeps the milliseconds.
pub fn date(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Prints `value` (a JSON object or array) in the chosen format. Tables show one
/// `key  value` line per field of an object, or one line per element of an array.
pub fn print(format: Format, value: &Value) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
        Format::Jsonl => match value {
            Value::Array(items) => {
                for item in items {
                    println!("{item}");
                }
            }
            other => println!("{other}"),
        },
        Format::Table => match value {
            Value::Object(map) => {
                let width = map.keys().map(String::len).max().unwrap_or(0);
                for (k, v) in map {
                    println!("{k:<width$}  {}", scalar(v));
                }
            }
            Value::Array(items) => {
                for item in items {
                    println!("{}", scalar(item));
                }
            }
            other => println!("{}", scalar(other)),
        },
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
