//! A small Chrome DevTools Protocol client, so browser tests can do what a
//! person does: type into a field, click a button at its place on the screen,
//! follow the navigation that follows. Headless Chromium listens on a local
//! WebSocket; the client speaks just enough of RFC 6455 for it (text frames,
//! masked from the client, unmasked from the server).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::TestResult;

/// A headless Chromium with one page, driven over the DevTools protocol.
pub struct Session {
    browser: Child,
    socket: TcpStream,
    next_id: u64,
}

impl Session {
    /// Starts `binary` with its profile in `profile` and connects to its page.
    pub fn start(binary: &Path, profile: &Path, extra_args: &[&str]) -> TestResult<Self> {
        let browser = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra_args)
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut session_browser = Some(browser);
        let result = (|| -> TestResult<(u16, String)> {
            // Chromium writes the port it picked to this file.
            let port_file = profile.join("DevToolsActivePort");
            let deadline = Instant::now() + Duration::from_secs(20);
            let port: u16 = loop {
                if let Some(port) = std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|text| text.lines().next()?.trim().parse().ok())
                {
                    break port;
                }
                if Instant::now() > deadline {
                    return Err("chromium did not open its DevTools port".into());
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let targets: Value = serde_json::from_str(&http_get(port, "/json/list")?)?;
            let page = targets
                .as_array()
                .and_then(|t| t.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                .ok_or("chromium has no page target")?;
            let path = page
                .split_once(&format!(":{port}"))
                .map(|(_, path)| path.to_owned())
                .ok_or("unexpected WebSocket URL")?;
            Ok((port, path))
        })();
        let (port, path) = match result {
            Ok(found) => found,
            Err(error) => {
                if let Some(mut browser) = session_browser.take() {
                    let _ = browser.kill();
                    let _ = browser.wait();
                }
                return Err(error);
            }
        };
        let socket = websocket_connect(port, &path)?;
        let browser = session_browser.take().ok_or("no browser")?;
        let mut session = Self {
            browser,
            socket,
            next_id: 1,
        };
        session.call("Page.enable", json!({}))?;
        Ok(session)
    }

    /// Sends a command and waits for its answer (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> TestResult<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        send_text(&mut self.socket, message.as_bytes())?;
        loop {
            let reply: Value = serde_json::from_slice(&receive_text(&mut self.socket)?)?;
            if reply["id"] == id {
                if let Some(error) = reply.get("error") {
                    return Err(format!("{method}: {error}").into());
                }
                return Ok(reply["result"].clone());
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; its JSON value.
    pub fn eval(&mut self, expression: &str) -> TestResult<Value> {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}").into());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Opens `url` and waits until the new document (not the old one) has loaded.
    pub fn navigate(&mut self, url: &str) -> TestResult {
        self.eval("window.__weftOldDocument = true")?;
        self.call("Page.navigate", json!({ "url": url }))?;
        self.wait_until(
            "window.__weftOldDocument === undefined && document.readyState === 'complete'",
        )
    }

    /// Waits (up to 15 s) until a JavaScript condition holds.
    pub fn wait_until(&mut self, condition: &str) -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // A navigation can replace the context mid-call: try again.
            if let Ok(Value::Bool(true)) = self.eval(condition) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let href = self.eval("location.href").unwrap_or_default();
                return Err(format!("timed out waiting for {condition} on {href}").into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types text into whatever has the focus, as a keyboard would.
    pub fn type_text(&mut self, text: &str) -> TestResult {
        self.call("Input.insertText", json!({ "text": text }))?;
        Ok(())
    }

    /// Presses and releases a key that types `key` (e.g. `"e"`).
    pub fn press_key(&mut self, key: &str) -> TestResult {
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({ "type": kind, "key": key, "text": if kind == "keyDown" { key } else { "" } }),
            )?;
        }
        Ok(())
    }

    /// Clicks the middle of the element `selector` picks, with the mouse.
    pub fn click(&mut self, selector: &str) -> TestResult {
        let selector_json = serde_json::to_string(selector)?;
        let point = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector_json}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ))?;
        let (Some(x), Some(y)) = (point[0].as_f64(), point[1].as_f64()) else {
            return Err(format!("nothing on the page matches {selector}").into());
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )?;
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.browser.kill();
        let _ = self.browser.wait();
    }
}

/// A GET to the DevTools HTTP server, which speaks HTTP/1.1 only and keeps
/// the connection open: the body is read by its `Content-Length`.
fn http_get(port: u16, path: &str) -> TestResult<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err("the DevTools server closed the connection".into());
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8(body)?)
}

fn websocket_connect(port: u16, path: &str) -> TestResult<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // No Origin header: Chromium lets local clients without one in.
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: d2VmdC1lMmUtY2RwLWtleQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.contains(" 101 ") {
        return Err(format!("WebSocket upgrade refused: {status}").into());
    }
    loop {
        let mut line = String::new();
        // Byte by byte through the BufReader would over-read; headers are short
        // and the server sends nothing before our first frame.
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    if !reader.buffer().is_empty() {
        return Err("unexpected bytes after the WebSocket handshake".into());
    }
    Ok(stream)
}

fn send_text(stream: &mut TcpStream, payload: &[u8]) -> TestResult {
    let mut frame = vec![0x81u8]; // FIN, text
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x5a, 0x17, 0xc3, 0x9e];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame)?;
    Ok(())
}

/// One whole message (continuation frames joined).
fn receive_text(stream: &mut TcpStream) -> TestResult<Vec<u8>> {
    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head)?;
        let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext)?;
            len = u64::from(u16::from_be_bytes(ext));
        } else if len == 127 {
            let mut ext = [0u8; 8];
            stream.read_exact(&mut ext)?;
            len = u64::from_be_bytes(ext);
        }
        let mut payload = vec![0u8; usize::try_from(len)?];
        stream.read_exact(&mut payload)?;
        match opcode {
            0x8 => return Err("the browser closed the DevTools connection".into()),
            0x9 | 0xA => continue, // ping / pong: nothing to answer for a test
            _ => message.extend_from_slice(&payload),
        }
        if fin {
            return Ok(message);
        }
    }
}
