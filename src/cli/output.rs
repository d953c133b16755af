//! Printing results as aligned tables or JSON.

use serde_json::Value;

use super::Format;

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
