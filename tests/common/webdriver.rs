//! A small W3C WebDriver client for headless Chromium through `chromedriver` (Debian's
//! `chromium-driver`): the commands the console test uses, over plain HTTP on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver's key codes.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

/// A `chromedriver` process and one headless Chromium session; both end when dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    /// Starts `chromedriver` (`ARCA_CHROMEDRIVER`, default `chromedriver` on PATH) and a
    /// headless Chromium that trusts any certificate (the test cluster's CA is its own).
    pub fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let bin = std::env::var("ARCA_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let driver = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e} (install chromium and chromium-driver: scripts/test.sh does)"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut b = Browser { driver, port, session: String::new() };
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--ignore-certificate-errors",
            "--window-size=1280,1000",
            "--no-first-run",
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "acceptInsecureCerts": true,
            "goog:chromeOptions": {"args": args, "binary": std::env::var("ARCA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())}
        }}});
        let v = b.send("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b
    }

    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        // chromedriver may keep the connection open: read the head, then Content-Length bytes.
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "{method} {path}: chromedriver closed the connection");
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        let length =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
        match length {
            Some(len) => {
                while raw.len() < head_end + len {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "{method} {path}: short body");
                    raw.extend_from_slice(&buf[..n]);
                }
            }
            None => {
                s.read_to_end(&mut raw).unwrap();
            }
        }
        let rest = String::from_utf8_lossy(&raw[head_end..]).into_owned();
        let body = if head.contains("transfer-encoding: chunked") { dechunk(&rest) } else { rest };
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}"));
        v["value"].clone()
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        let v = self.send(method, &format!("/session/{}{what}", self.session), body);
        if let Some(err) = v.get("error") {
            panic!("{method} {what}: {err}: {}", v["message"]);
        }
        v
    }

    pub fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap_or("").to_string()
    }

    pub fn source(&self) -> String {
        self.cmd("GET", "/source", None).as_str().unwrap_or("").to_string()
    }

    /// The element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let v = self.send(
            "POST",
            &format!("/session/{}/element", self.session),
            Some(json!({"using": "css selector", "value": css})),
        );
        v.get(ELEMENT).and_then(Value::as_str).map(str::to_string)
    }

    pub fn el(&self, css: &str) -> String {
        self.find(css).unwrap_or_else(|| panic!("no element {css} on {}:\n{}", self.url(), self.source()))
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.el(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd("POST", &format!("/element/{e}/value"), Some(json!({ "text": text })));
    }

    pub fn click(&self, css: &str) {
        let e = self.el(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    pub fn text(&self, css: &str) -> String {
        let e = self.el(css);
        self.cmd("GET", &format!("/element/{e}/text"), None).as_str().unwrap_or("").to_string()
    }

    /// Keys sent to whatever has the focus (Tab, Enter, text): a keyboard-only user.
    pub fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [json!({"type": "keyDown", "value": c.to_string()}), json!({"type": "keyUp", "value": c.to_string()})]
            })
            .collect();
        self.cmd("POST", "/actions", Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})));
    }

    /// The `id` of the focused element ("" for none).
    pub fn focused_id(&self) -> String {
        let e = self.cmd("GET", "/element/active", None);
        let Some(id) = e.get(ELEMENT).and_then(Value::as_str) else { return String::new() };
        self.cmd("GET", &format!("/element/{id}/attribute/id"), None).as_str().unwrap_or("").to_string()
    }

    /// Presses Tab until the element with `id` has the focus (at most 40 times).
    pub fn tab_to(&self, id: &str) {
        for _ in 0..40 {
            if self.focused_id() == id {
                return;
            }
            self.keys(TAB);
        }
        panic!("Tab never reached #{id} on {}", self.url());
    }

    pub fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None).as_array().cloned().unwrap_or_default()
    }

    pub fn add_cookie(&self, cookie: Value) {
        self.cmd("POST", "/cookie", Some(json!({ "cookie": cookie })));
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or("")).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Polls `f` every 100 ms for up to `limit`.
    pub fn wait_for(&self, limit: Duration, mut f: impl FnMut(&Browser) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.send("DELETE", &format!("/session/{}", self.session), None);
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
