//! Templates (minijinja) and the reads behind one render.
//!
//! A render never mixes secrets from different moments: the secrets a pass asks for are read,
//! then read again, and the render is kept only if every second read returned the version of
//! the first. No version number is current (or pending, or previous) twice: a write makes a new
//! number, and a promotion moves a label to a version that never held it. So a secret whose two
//! reads agree held that version throughout; all first reads come before all second reads, so
//! there is one moment (between the last first read and the first second read) when every value
//! rendered was the one stored. Otherwise (a rotation was writing), the render is done again.
//!
//! What a template reads is found by rendering it: a pass that asks for a secret not yet read
//! records it and the pass is repeated once it is read, so conditionals and loops are followed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use arca_client::{Client, Code, Secret, Which};
use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use tracing::debug;

use crate::{Error, Result};

/// One secret a render asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Want {
    pub path: String,
    /// 0: by stage (or current); n: version n.
    pub version: u64,
    /// "", "pending" or "previous".
    pub stage: String,
}

impl Want {
    fn which(&self) -> Which {
        match (self.version, self.stage.as_str()) {
            (v, _) if v > 0 => Which::Version(v),
            (_, "pending") => Which::Pending,
            (_, "previous") => Which::Previous,
            _ => Which::Current,
        }
    }
}

/// A secret a template asked for that is gone or not readable: the template's `on_missing`
/// decides.
#[derive(Debug, Clone)]
pub struct Missing {
    pub path: String,
    pub reason: String,
}

#[derive(Default)]
struct State {
    read: HashMap<Want, std::result::Result<Secret, Missing>>,
    /// Asked for during this pass and not read yet.
    unread: BTreeSet<Want>,
    /// Missing secrets asked for during this pass.
    missing: Vec<Missing>,
}

/// What a template produced. `Debug` shows no rendered text (it holds secret values).
pub enum Output {
    Text(String),
    /// A secret it reads is gone or not readable.
    Missing(Vec<Missing>),
    /// The template itself is wrong (syntax, an unknown field, a filter error).
    Broken(String),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Text(t) => write!(f, "Text({} bytes, redacted)", t.len()),
            Output::Missing(m) => f.debug_tuple("Missing").field(m).finish(),
            Output::Broken(e) => f.debug_tuple("Broken").field(e).finish(),
        }
    }
}

/// The outputs of one render, in the order of the names given to [`Renderer::new`], and the
/// secret paths they read.
#[derive(Debug)]
pub struct Rendered {
    pub outputs: Vec<Output>,
    pub paths: BTreeSet<String>,
}

pub struct Renderer {
    env: Environment<'static>,
    names: Vec<&'static str>,
    state: Arc<Mutex<State>>,
}

/// How many times one render is repeated (to find what it reads, or because a secret
/// changed while it was read) before giving up until the next change.
const MAX_PASSES: usize = 8;

impl Renderer {
    /// `templates`: (name, source) pairs. The sources are parsed now: a syntax error is a
    /// configuration error.
    pub fn new(templates: Vec<(String, String)>) -> Result<Renderer> {
        let state = Arc::new(Mutex::new(State::default()));
        let mut env = Environment::new();
        // A misspelt field must fail the render, not render an empty password.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // Debug output lists the variables a failing template saw: secret values.
        env.set_debug(false);
        let s = state.clone();
        env.add_function("secret", move |path: String, kwargs: Kwargs| secret_fn(&s, path, kwargs));
        env.add_filter("toenv", toenv);
        env.add_filter("toyaml", toyaml);
        let mut names = Vec::new();
        for (name, source) in templates {
            // The environment borrows for 'static; templates live as long as the agent.
            let name: &'static str = Box::leak(name.into_boxed_str());
            let source: &'static str = Box::leak(source.into_boxed_str());
            env.add_template(name, source).map_err(|e| Error::Config(format!("{name}: {e}")))?;
            names.push(name);
        }
        Ok(Renderer { env, names, state })
    }

    /// Renders every template from one consistent set of reads.
    pub async fn render(&self, client: &Client) -> Result<Rendered> {
        let mut state = State::default();
        // Passes that found more secrets to read, and renders redone because one changed.
        let (mut discovering, mut redone) = (0, 0);
        while discovering < MAX_PASSES && redone < MAX_PASSES {
            let pass = discovering + redone;
            state.missing.clear();
            *self.state.lock().expect("render state") = std::mem::take(&mut state);
            let outputs: Vec<_> = self.names.iter().map(|n| self.render_one(n)).collect();
            state = std::mem::take(&mut *self.state.lock().expect("render state"));
            if !state.unread.is_empty() {
                debug!(pass, new = state.unread.len(), "the templates ask for more secrets");
                for want in std::mem::take(&mut state.unread) {
                    let got = read(client, &want).await?;
                    state.read.insert(want, got);
                }
                discovering += 1;
                continue;
            }
            if !self.still_current(client, &state).await? {
                debug!(pass, "a secret changed while it was read; rendering again");
                state = State::default();
                redone += 1;
                continue;
            }
            let paths = state.read.keys().map(|w| w.path.clone()).collect();
            return Ok(Rendered { outputs, paths });
        }
        Err(Error::Render(if redone >= MAX_PASSES {
            format!("the secrets changed during each of {MAX_PASSES} renders; trying again at the next change")
        } else {
            format!("the templates kept asking for secrets that depend on other secrets over {MAX_PASSES} passes")
        }))
    }

    fn render_one(&self, name: &str) -> Output {
        let before = self.state.lock().expect("render state").missing.len();
        let result = self.env.get_template(name).and_then(|t| t.render(()));
        let mut state = self.state.lock().expect("render state");
        let missing: Vec<Missing> = state.missing.split_off(before);
        state.missing.extend(missing.iter().cloned());
        match result {
            _ if !missing.is_empty() => Output::Missing(missing),
            Ok(text) => Output::Text(text),
            Err(e) => Output::Broken(e.to_string()),
        }
    }

    /// Reads every secret again: were they all still the versions rendered?
    async fn still_current(&self, client: &Client, state: &State) -> Result<bool> {
        for (want, first) in &state.read {
            if want.version > 0 {
                continue; // A numbered version does not change.
            }
            let again = read(client, want).await?;
            let same = match (first, &again) {
                (Ok(a), Ok(b)) => a.version() == b.version(),
                (Err(_), Err(_)) => true,
                _ => false,
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Reads one secret; a secret that is gone or not readable is `Missing` (the template's
/// policy decides), anything else (the cluster unreachable) fails the render, so no file is
/// touched.
async fn read(client: &Client, want: &Want) -> Result<std::result::Result<Secret, Missing>> {
    match client.read(&want.path, want.which()).await {
        Ok(secret) => Ok(Ok(secret)),
        Err(e) if matches!(e.code(), Some(Code::NotFound | Code::PermissionDenied)) => {
            Ok(Err(Missing { path: want.path.clone(), reason: e.to_string() }))
        }
        Err(e) => Err(Error::Client(e)),
    }
}

/// `secret(path, version=N, stage="pending")`: the secret's fields as a map.
fn secret_fn(state: &Mutex<State>, path: String, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let version: Option<u64> = kwargs.get("version")?;
    let stage: Option<String> = kwargs.get("stage")?;
    kwargs.assert_all_used()?;
    let stage = stage.unwrap_or_default();
    if !matches!(stage.as_str(), "" | "current" | "pending" | "previous") {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("stage {stage:?}: use current, pending or previous"),
        ));
    }
    let stage = if stage == "current" { String::new() } else { stage };
    let want = Want { path, version: version.unwrap_or(0), stage };
    let mut state = state.lock().expect("render state");
    match state.read.get(&want) {
        Some(Ok(secret)) => {
            let fields: BTreeMap<&str, &str> = secret.keys().filter_map(|k| Some((k, secret.get(k)?))).collect();
            Ok(Value::from_serialize(&fields))
        }
        Some(Err(missing)) => {
            let missing = missing.clone();
            let message = format!("secret {} is not available: {}", missing.path, missing.reason);
            state.missing.push(missing);
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        }
        None => {
            state.unread.insert(want);
            Ok(Value::from_object(Unread))
        }
    }
}

/// A secret not read yet. Any field of it is "", so the rest of the pass runs on and finds
/// every other secret the template asks for; the pass is thrown away once they are read.
#[derive(Debug)]
struct Unread;

impl Object for Unread {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, _key: &Value) -> Option<Value> {
        Some(Value::from(""))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Empty
    }
}

/// `{{ secret("db/app") | toenv }}`: `KEY='value'` lines, shell-quoted, keys upper-cased.
fn toenv(v: Value) -> std::result::Result<String, minijinja::Error> {
    let mut out = String::new();
    for key in v.try_iter()? {
        let value = v.get_item(&key)?;
        let name: String =
            key.to_string().to_uppercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        out.push_str(&format!("{name}='{}'\n", value.to_string().replace('\'', "'\\''")));
    }
    Ok(out)
}

/// `{{ secret("db/app") | toyaml }}`: `key: "value"` lines (JSON strings are YAML scalars).
fn toyaml(v: Value) -> std::result::Result<String, minijinja::Error> {
    let mut out = String::new();
    for key in v.try_iter()? {
        let value = v.get_item(&key)?;
        let quote = |s: String| serde_json::to_string(&s).unwrap_or_default();
        out.push_str(&format!("{}: {}\n", quote(key.to_string()), quote(value.to_string())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_with(source: &str, secrets: &[(&str, &[(&str, &str)])]) -> Output {
        let r = Renderer::new(vec![("t".into(), source.into())]).unwrap();
        let mut state = State::default();
        for (path, fields) in secrets {
            let data = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let want = Want { path: path.to_string(), version: 0, stage: String::new() };
            state.read.insert(want, Ok(Secret::new(*path, 1, data)));
        }
        *r.state.lock().unwrap() = state;
        r.render_one("t")
    }

    #[test]
    fn fields_helpers_and_defaults() {
        let db: &[(&str, &str)] = &[("username", "app"), ("password", "it's")];
        let text = |o: Output| match o {
            Output::Text(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(text(render_with("{{ secret('db').username }}", &[("db", db)])), "app");
        assert_eq!(
            text(render_with("{{ secret('db') | toenv }}", &[("db", db)])),
            "PASSWORD='it'\\''s'\nUSERNAME='app'\n"
        );
        assert_eq!(
            text(render_with("{{ secret('db') | toyaml }}", &[("db", db)])),
            "\"password\": \"it's\"\n\"username\": \"app\"\n"
        );
        assert_eq!(text(render_with("{{ secret('db').port | default('5432') }}", &[("db", db)])), "5432");
        assert!(text(render_with("{{ secret('db') | tojson }}", &[("db", db)])).contains("\"username\":\"app\""));
    }

    #[test]
    fn a_misspelt_field_is_an_error_not_an_empty_value() {
        let db: &[(&str, &str)] = &[("password", "p")];
        assert!(matches!(render_with("{{ secret('db').pasword }}", &[("db", db)]), Output::Broken(_)));
    }

    #[test]
    fn an_unread_secret_is_recorded_for_the_next_pass() {
        let r = Renderer::new(vec![("t".into(), "{{ secret('a').x }}{{ secret('b', stage='pending').y }}".into())])
            .unwrap();
        let _ = r.render_one("t");
        let unread: Vec<_> = r.state.lock().unwrap().unread.iter().map(|w| (w.path.clone(), w.stage.clone())).collect();
        assert_eq!(unread, vec![("a".to_string(), String::new()), ("b".to_string(), "pending".to_string())]);
    }

    #[test]
    fn a_syntax_error_is_a_configuration_error() {
        let e = Renderer::new(vec![("db.tmpl".into(), "{{ secret('a'".into())]).err().unwrap();
        assert!(e.to_string().contains("db.tmpl"), "{e}");
    }
}
