//! The web console at `/ui`, in a real headless Chromium (WebDriver through Debian's
//! `chromium-driver`) against a 3-node cluster: sign in, create and reveal a secret, see a
//! rotation's next run and start it, unseal a sealed node through the form, find a denied
//! request in the audit view, sign out and be refused with the old session; a read-only user
//! sees no write buttons and a forged write is refused and audited; a keyboard-only walk
//! through sign-in, secrets and audit. Screenshots of each screen are saved.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::webdriver::{Browser, ENTER};
use common::DevCluster;
use serde_json::json;

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn json_out(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

/// A token holding `admin` (everything, with sudo): the console's sessions are child tokens,
/// and a root token's children hold no root policy.
fn admin_token(c: &DevCluster) -> String {
    let hcl = c.dir.path().join("admin.hcl");
    std::fs::write(
        &hcl,
        "path \"*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\", \"sudo\"] }\n",
    )
    .unwrap();
    c.ok(1, &["policy", "write", "admin", hcl.to_str().unwrap()]);
    let out = c.ok(1, &["token", "create", "--policy", "admin", "--format", "json"]);
    json_out(&out)["token"].as_str().unwrap().to_string()
}

fn sign_in_with_token(b: &Browser, base: &str, token: &str) {
    b.go(&format!("{base}/ui/login"));
    b.type_into("#token", token);
    b.click("#sign-in");
    assert!(
        b.wait_for(Duration::from_secs(10), |b| b.url().ends_with("/ui/secrets")),
        "signed in at {}:\n{}",
        b.url(),
        b.source()
    );
}

fn sign_out(b: &Browser) {
    b.click("#sign-out");
    assert!(b.wait_for(Duration::from_secs(10), |b| b.url().contains("/ui/login")));
}

#[test]
fn the_console_in_a_real_browser() {
    let c = DevCluster::start(3);
    let shots = shots();
    let base = c.api(1);
    let admin = admin_token(&c);
    c.ok(1, &["kv", "put", "app/rot", "v=1"]);
    c.ok(1, &["rotation", "set", "app/rot", "--rotator", "random", "--every", "1h", "--param", "length=20"]);
    // A read-only role for the second user.
    let ro = c.dir.path().join("ro.hcl");
    std::fs::write(&ro, "path \"secret/data/*\" { capabilities = [\"read\", \"list\"] }\npath \"secret/metadata/*\" { capabilities = [\"read\", \"list\"] }\n").unwrap();
    c.ok(1, &["policy", "write", "readonly", ro.to_str().unwrap()]);
    c.ok(1, &["approle", "role", "write", "viewer", "--policies", "readonly"]);
    let role_id = json_out(&c.ok(1, &["approle", "role-id", "viewer", "--format", "json"]))["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = json_out(&c.ok(1, &["approle", "secret-id", "viewer", "--format", "json"]))["secret_id"]
        .as_str()
        .unwrap()
        .to_string();

    let b = Browser::start();

    // Sign in; the session is an HttpOnly, Secure, SameSite=Strict cookie.
    b.go(&format!("{base}/ui/"));
    assert!(b.wait_for(Duration::from_secs(10), |b| b.url().contains("/ui/login")));
    b.screenshot(&shots.join("login.png"));
    sign_in_with_token(&b, &base, &admin);
    let session = b.cookies().into_iter().find(|c| c["name"] == "__Host-arca_session").expect("a session cookie");
    assert_eq!((session["httpOnly"].as_bool(), session["secure"].as_bool()), (Some(true), Some(true)), "{session}");
    assert_eq!(session["sameSite"], "Strict");
    assert_ne!(
        session["value"].as_str(),
        Some(admin.as_str()),
        "the session holds a child token, not the one typed in"
    );

    // Create a secret, then reveal it (a read of its own, audited).
    b.type_into("#new-path", "app/web");
    b.type_into("#new-data", "user=web\npass=s3cr3t-ui-7e1");
    b.click("#create-secret");
    assert!(b.wait_for(Duration::from_secs(10), |b| b.url().contains("/ui/secret?path=app/web")), "{}", b.source());
    assert_eq!(b.text("#current-version"), "1");
    assert!(!b.source().contains("s3cr3t-ui-7e1"), "values are shown only on a click");
    b.click("#reveal-1");
    assert!(b.wait_for(Duration::from_secs(10), |b| b.find("#revealed").is_some()));
    assert!(b.text("#revealed").contains("s3cr3t-ui-7e1"));
    b.screenshot(&shots.join("secret.png"));
    b.go(&format!("{base}/ui/secrets?prefix=app/"));
    b.screenshot(&shots.join("secrets.png"));

    // The rotation's next run, and "rotate now".
    b.go(&format!("{base}/ui/rotation"));
    let next = b.text("#rotations .next-run");
    assert!(next.contains("UTC") && next.starts_with("20"), "next run shown as a date: {next:?}");
    b.click(".rotate-now");
    assert!(b.wait_for(Duration::from_secs(10), |b| b.find("#notice").is_some()), "{}", b.source());
    let rotated = b.wait_for(Duration::from_secs(20), |b| {
        b.go(&format!("{base}/ui/rotation?path=app/rot"));
        b.text("#timeline").contains("finish")
    });
    assert!(rotated, "the rotation did not finish: {}", b.source());
    b.screenshot(&shots.join("rotation.png"));

    // Cluster view; then node 3 sealed and unsealed through the form, share by share.
    b.go(&format!("{base}/ui/cluster"));
    assert!(b.source().contains("leader") && b.text("#term").parse::<u32>().is_ok(), "{}", b.source());
    b.screenshot(&shots.join("cluster.png"));
    c.ok(3, &["operator", "seal"]);
    // Every member's seal state on one page: node 1 asks each member for its own.
    b.go(&format!("{base}/ui/cluster"));
    let seals = b.text("#members-h ~ table");
    assert!(seals.contains("sealed (0 of 3 shares)") && seals.matches("unsealed").count() == 2, "{seals}");
    let node3 = c.api(3);
    b.go(&format!("{node3}/ui/"));
    assert!(b.wait_for(Duration::from_secs(10), |b| b.url().ends_with("/ui/cluster")));
    assert_eq!(b.text("#seal-state"), "sealed");
    let threshold = 3;
    for (i, share) in c.shares.iter().take(threshold).enumerate() {
        b.type_into("#share", share);
        if i == 1 {
            b.screenshot(&shots.join("unseal.png"));
        }
        b.click("#unseal");
        assert!(b.wait_for(Duration::from_secs(10), |b| b.find("#seal-state").is_some()));
    }
    assert!(b.wait_for(Duration::from_secs(20), |b| {
        b.go(&format!("{node3}/ui/cluster"));
        b.find("#seal-state").is_some_and(|_| b.text("#seal-state") == "unsealed") || b.url().contains("/ui/login")
    }));
    assert!(common::eventually(Duration::from_secs(20), || c
        .arca(3, &["kv", "get", "app/web", "--field", "user"])
        .status
        .success()
        .then_some(()))
    .is_some());

    // Sign out: the old session cookie no longer works.
    b.go(&format!("{base}/ui/secrets"));
    let old = b.cookies().into_iter().find(|c| c["name"] == "__Host-arca_session").unwrap();
    sign_out(&b);
    assert!(b.source().contains("Signed out"));
    b.add_cookie(
        json!({"name": "__Host-arca_session", "value": old["value"], "path": "/", "secure": true, "httpOnly": true}),
    );
    b.go(&format!("{base}/ui/secrets"));
    assert!(b.wait_for(Duration::from_secs(10), |b| b.url().contains("/ui/login?ended=1")), "{}", b.url());
    assert!(b.text("#error").contains("session ended"));

    // A read-only user: no write buttons; a forged write is refused (and audited).
    b.go(&format!("{base}/ui/login"));
    b.click("#method option[value=approle]");
    b.type_into("#role_id", &role_id);
    b.type_into("#secret_id", &secret_id);
    b.click("#sign-in");
    assert!(b.wait_for(Duration::from_secs(10), |b| b.url().ends_with("/ui/secrets")), "{}", b.source());
    b.go(&format!("{base}/ui/secret?path=app/web"));
    let page = b.source();
    assert!(page.contains("secret-path") && !page.contains("write-version") && !page.contains(">Delete<"), "{page}");
    assert!(b.find("#new-secret-form").is_none());
    let jar = b.cookies();
    let cookie =
        |name: &str| jar.iter().find(|c| c["name"] == name).and_then(|c| c["value"].as_str()).unwrap().to_string();
    let (viewer, csrf) = (cookie("__Host-arca_session"), cookie("__Host-arca_csrf"));
    let forged = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-b"])
        .arg(format!("__Host-arca_session={viewer}; __Host-arca_csrf={csrf}"))
        .args(["--data", &format!("csrf={csrf}&path=app/web&cas=1&data=user%3Dforged")])
        .arg(format!("{base}/ui/secret/write"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&forged.stdout), "403", "{}", common::stderr(&forged));
    // Without the anti-forgery value, refused before the core sees it.
    let no_csrf = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-b"])
        .arg(format!("__Host-arca_session={viewer}; __Host-arca_csrf={csrf}"))
        .args(["--data", "path=app/web&cas=1&data=user%3Dforged"])
        .arg(format!("{base}/ui/secret/write"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&no_csrf.stdout), "403");
    assert!(c.ok(1, &["kv", "get", "app/web", "--field", "user"]).trim() == "web", "nothing was written");
    sign_out(&b);

    // The denied write, found in the audit view.
    sign_in_with_token(&b, &base, &admin);
    b.go(&format!("{base}/ui/audit?outcome=denied&path=secret/data/app/web"));
    let found = b.wait_for(Duration::from_secs(15), |b| {
        b.go(&format!("{base}/ui/audit?outcome=denied&path=secret/data/app/web"));
        b.source().contains("class=\"denied\"")
    });
    assert!(found, "no denied record in the audit view: {}", b.source());
    // The forged form without its anti-forgery value is in the trail too, as a rejection.
    b.go(&format!("{base}/ui/audit?path=/ui/secret/write"));
    assert!(b.source().contains("the form's anti-forgery value is missing"), "{}", b.source());
    b.go(&format!("{base}/ui/audit?outcome=denied&path=secret/data/app/web"));
    b.click("#verify-now");
    assert!(b.wait_for(Duration::from_secs(10), |b| b.find("#verification").is_some()));
    assert!(b.text("#verification").contains("intact"));
    // The live tail: a write made elsewhere appears without a reload.
    b.go(&format!("{base}/ui/audit?path=secret/data/tail/live"));
    b.click("#live");
    c.ok(2, &["kv", "put", "tail/live", "k=v"]);
    assert!(
        b.wait_for(Duration::from_secs(15), |b| b.text("#records-body").contains("secret/data/tail/live")),
        "live tail: {}",
        b.source()
    );
    b.go(&format!("{base}/ui/audit?path=secret/data/app/web"));
    b.screenshot(&shots.join("audit.png"));
    b.go(&format!("{base}/ui/policies?name=readonly&check=secret/data/app/web"));
    assert!(b.text("#caps-result").contains("create"), "admin's own capabilities: {}", b.text("#caps-result"));
    b.screenshot(&shots.join("policies.png"));
    sign_out(&b);

    // Keyboard only: sign in, open a secret, open the audit trail.
    b.go(&format!("{base}/ui/login"));
    b.tab_to("token");
    b.keys(&admin);
    b.tab_to("sign-in");
    b.keys(ENTER);
    assert!(b.wait_for(Duration::from_secs(10), |b| b.url().ends_with("/ui/secrets")), "keyboard sign-in: {}", b.url());
    b.tab_to("key-1");
    b.keys(ENTER);
    assert!(b.wait_for(Duration::from_secs(10), |b| b.url().contains("prefix=app")), "keyboard: folder {}", b.url());
    // app/rot, then app/web.
    b.tab_to("key-2");
    b.keys(ENTER);
    assert!(
        b.wait_for(Duration::from_secs(10), |b| b.url().contains("secret?path=app")),
        "keyboard: secret {}",
        b.url()
    );
    assert_eq!(b.text("#secret-path"), "app/web");
    b.tab_to("nav-audit");
    b.keys(ENTER);
    assert!(b.wait_for(Duration::from_secs(10), |b| b.url().ends_with("/ui/audit")), "keyboard: audit {}", b.url());
    assert!(b.find("#records").is_some());
    println!("screenshots in {}", shots.display());
}
