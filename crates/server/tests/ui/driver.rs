//! Chromedriver and headless Chromium for the dashboard test: finding them, starting them on
//! a free port, and the few steps the test takes (fill, click, wait for text, screenshot).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::process::{Child, Command};

/// How long a step waits for what it expects.
const WAIT: Duration = Duration::from_secs(20);

pub struct Browser {
    pub client: Client,
    driver: Child,
    shots: PathBuf,
}

/// The first of `names` that is an executable on `PATH` (or an absolute path that exists).
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        let p = Path::new(name);
        if p.is_absolute() {
            if p.exists() {
                return Some(p.to_path_buf());
            }
            continue;
        }
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Whether a missing browser must fail the test (CI, or asked for).
fn browser_required() -> bool {
    ["CI", "CRMHOOKS_REQUIRE_BROWSER"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0" && s != "false"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` (the test is skipped) when
    /// either is missing and no browser is required.
    pub async fn launch() -> Option<Browser> {
        let driver_bin = std::env::var_os("CRMHOOKS_CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| find(&["chromedriver", "/usr/lib/chromium/chromedriver"]));
        let chrome_bin = std::env::var_os("CRMHOOKS_CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| find(&["chromium", "chromium-browser", "google-chrome"]));
        let (Some(driver_bin), Some(chrome_bin)) = (driver_bin, chrome_bin) else {
            let msg =
                "chromedriver or chromium is missing: apt-get install chromium chromium-driver";
            assert!(
                !browser_required(),
                "{msg} (CI or CRMHOOKS_REQUIRE_BROWSER is set)"
            );
            eprintln!("SKIPPED the browser test: {msg}");
            return None;
        };
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_bin.display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chrome_bin,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1800",
                         "--hide-scrollbars", "--force-device-scale-factor=1"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + WAIT;
        let client = loop {
            // chromedriver speaks plain HTTP on loopback: no TLS connector needed.
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver at {url} did not start a session: {e}"),
            }
        };
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
        std::fs::create_dir_all(&shots).expect("target/ui-screenshots");
        Some(Browser {
            client,
            driver,
            shots,
        })
    }

    pub async fn size(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// The element `css`, waiting up to WAIT for it.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    pub async fn click(&self, css: &str) {
        // A list the page re-renders (a refresh after an answer) can replace the element between
        // finding and clicking it: find it again, as a person would, until WAIT runs out.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let el = self.find(css).await;
            match el.click().await {
                Ok(_) => return,
                Err(e)
                    if e.to_string().contains("stale") && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Replaces the value of the input `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap();
        if !text.is_empty() {
            el.send_keys(text).await.unwrap();
        }
    }

    pub async fn value(&self, css: &str) -> String {
        let el = self.client.find(Locator::Css(css)).await.unwrap();
        el.prop("value").await.unwrap().unwrap_or_default()
    }

    /// Waits until an element matching `css` shows `text`.
    pub async fn wait_text(&self, css: &str, text: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        while tokio::time::Instant::now() < deadline {
            seen.clear();
            if let Ok(els) = self.client.find_all(Locator::Css(css)).await {
                for el in els {
                    if let Ok(t) = el.text().await {
                        if t.contains(text) {
                            return;
                        }
                        seen.push(t);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.shot("failed-wait").await;
        panic!("no {css} showed {text:?} within {WAIT:?}; seen: {seen:?}");
    }

    /// Clicks the Refresh button (the first `refresh` match whose text is "Refresh") until `n`
    /// elements match `css`.
    pub async fn until_count(&self, css: &str, n: usize, refresh: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self
                .client
                .find_all(Locator::Css(css))
                .await
                .map(|v| v.len())
                .unwrap_or(0);
            if found >= n {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                self.shot("failed-count").await;
                panic!("{found} of {n} {css} within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if let Ok(buttons) = self.client.find_all(Locator::Css(refresh)).await {
                for b in buttons {
                    if b.text().await.is_ok_and(|t| t == "Refresh") {
                        let _ = b.click().await;
                        break;
                    }
                }
            }
        }
    }

    /// Presses Tab `n` times; the text (or else the tag) of what has the focus after each.
    pub async fn tab_through(&self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let tab: char = Key::Tab.into();
            let press = KeyActions::new("keyboard".into())
                .then(KeyAction::Down { value: tab })
                .then(KeyAction::Up { value: tab });
            self.client.perform_actions(press).await.unwrap();
            let v = self
                .client
                .execute(
                    "const e = document.activeElement; return e.textContent.trim() || e.tagName;",
                    vec![],
                )
                .await
                .unwrap();
            out.push(v.as_str().unwrap_or_default().trim().to_owned());
        }
        out
    }

    /// Saves a screenshot of the top of the page as `target/ui-screenshots/{name}.png`.
    pub async fn shot(&self, name: &str) {
        let _ = self.client.execute("window.scrollTo(0, 0);", vec![]).await;
        self.save(name).await;
    }

    /// Saves a screenshot with the element `css` scrolled to the top.
    pub async fn shot_at(&self, name: &str, css: &str) {
        let script = "document.querySelector(arguments[0]).scrollIntoView();";
        let _ = self.client.execute(script, vec![json!(css)]).await;
        self.save(name).await;
    }

    async fn save(&self, name: &str) {
        match self.client.screenshot().await {
            Ok(png) => {
                let path = self.shots.join(format!("{name}.png"));
                std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            Err(e) => eprintln!("screenshot {name}: {e}"),
        }
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}
