//! SMS over HTTP: a generic, templated request (`http`), and presets for 46elks and Twilio.
//!
//! `{to}` and `{message}` in the URL, body and form values are escaped for where they stand:
//! percent-encoded in URLs and forms, JSON-escaped in a JSON body.

use std::time::Duration;

use async_trait::async_trait;

use super::settings::{AccountSettings, HttpSettings};
use super::{Gateway, SmsError};
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    None,
    Template,
    Form,
}

pub struct HttpGateway {
    kind: &'static str,
    client: reqwest::Client,
    method: reqwest::Method,
    url: String,
    headers: Vec<(String, Secret<String>)>,
    basic_auth: Option<(String, Secret<String>)>,
    body: BodyKind,
    template: String,
    content_type: String,
    form: Vec<(String, String)>,
}

impl HttpGateway {
    pub fn generic(s: &HttpSettings) -> Result<Self, String> {
        Ok(Self {
            kind: "http",
            client: client(s.timeout)?,
            method: s.method.clone(),
            url: s.url.clone(),
            headers: s.headers.clone(),
            basic_auth: s.basic_auth.clone(),
            body: if s.body.is_some() { BodyKind::Template } else { BodyKind::None },
            template: s.body.clone().unwrap_or_default(),
            content_type: s.content_type.clone().unwrap_or_else(|| "text/plain; charset=utf-8".into()),
            form: Vec::new(),
        })
    }

    /// 46elks: form POST with HTTP basic auth (API username and password).
    pub fn elks46(a: &AccountSettings) -> Result<Self, String> {
        Self::form_preset(
            "46elks",
            a.url.clone().unwrap_or_else(|| "https://api.46elks.com/a1/sms".into()),
            a,
            vec![("from".into(), a.from.clone()), ("to".into(), "{to}".into()), ("message".into(), "{message}".into())],
        )
    }

    /// Twilio: form POST to the account's Messages resource, basic auth (account SID, auth token).
    pub fn twilio(a: &AccountSettings) -> Result<Self, String> {
        let url = a.url.clone().unwrap_or_else(|| format!("https://api.twilio.com/2010-04-01/Accounts/{}/Messages.json", a.account));
        Self::form_preset(
            "twilio",
            url,
            a,
            vec![("To".into(), "{to}".into()), ("From".into(), a.from.clone()), ("Body".into(), "{message}".into())],
        )
    }

    fn form_preset(kind: &'static str, url: String, account: &AccountSettings, form: Vec<(String, String)>) -> Result<Self, String> {
        Ok(Self {
            kind,
            client: client(account.timeout)?,
            method: reqwest::Method::POST,
            url,
            headers: Vec::new(),
            basic_auth: Some((account.account.clone(), account.credential.clone())),
            body: BodyKind::Form,
            template: String::new(),
            content_type: "application/x-www-form-urlencoded".into(),
            form,
        })
    }
}

fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build().map_err(|e| format!("cannot build the HTTP client: {e}"))
}

fn percent(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn json_escaped(text: &str) -> String {
    let quoted = serde_json::Value::String(text.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

fn fill(template: &str, to: &str, message: &str, escape: impl Fn(&str) -> String) -> String {
    template.replace("{to}", &escape(to)).replace("{message}", &escape(message))
}

#[async_trait]
impl Gateway for HttpGateway {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn send_once(&self, to: &str, message: &Secret<String>) -> Result<(), SmsError> {
        let message = message.expose();
        let url = fill(&self.url, to, message, percent);
        let mut request = self.client.request(self.method.clone(), url);
        for (name, value) in &self.headers {
            request = request.header(name, value.expose());
        }
        if let Some((user, password)) = &self.basic_auth {
            request = request.basic_auth(user, Some(password.expose()));
        }
        request = match self.body {
            BodyKind::None => request,
            BodyKind::Template => {
                let json = self.content_type.contains("json");
                let body =
                    if json { fill(&self.template, to, message, json_escaped) } else { fill(&self.template, to, message, str::to_owned) };
                request.header(reqwest::header::CONTENT_TYPE, &self.content_type).body(body)
            }
            BodyKind::Form => {
                let fields: Vec<(String, String)> =
                    self.form.iter().map(|(k, v)| (k.clone(), fill(v, to, message, str::to_owned))).collect();
                request.form(&fields)
            }
        };
        // The error's text never includes the URL's query or the body (reqwest omits them).
        let response = request.send().await.map_err(|e| SmsError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() { Ok(()) } else { Err(SmsError::Status(status.as_u16())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts one HTTP request on a local port and hands back its raw text.
    fn capture_one() -> (String, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/sms", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()));
                    if data.len() >= end + 4 + length.and_then(|l| l.parse().ok()).unwrap_or(0) {
                        break;
                    }
                }
            }
            stream.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
            String::from_utf8(data).unwrap()
        });
        (url, handle)
    }

    fn basic(user: &str, password: &str) -> String {
        use base64::Engine as _;
        format!("authorization: basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
            .to_ascii_lowercase()
    }

    fn account(url: String, account: &str, credential: &str, from: &str) -> AccountSettings {
        AccountSettings {
            url: Some(url),
            account: account.into(),
            credential: Secret::new(credential.into()),
            from: from.into(),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn elks46_posts_its_form_with_basic_auth() {
        let (url, request) = capture_one();
        let gateway = HttpGateway::elks46(&account(url, "u123", "p456", "Region")).unwrap();
        gateway.send_once("+46701234567", &Secret::new("Kod: 123456 & mer".into())).await.unwrap();
        let raw = request.join().unwrap();
        assert!(raw.starts_with("POST /sms HTTP/1.1"), "{raw}");
        assert!(raw.to_ascii_lowercase().contains(&basic("u123", "p456")), "{raw}");
        assert!(raw.ends_with("from=Region&to=%2B46701234567&message=Kod%3A+123456+%26+mer"), "{raw}");
    }

    #[tokio::test]
    async fn twilio_posts_to_body_from_with_basic_auth() {
        let (url, request) = capture_one();
        let gateway = HttpGateway::twilio(&account(url, "AC1", "tok", "+4610")).unwrap();
        gateway.send_once("+46701234567", &Secret::new("Code 1".into())).await.unwrap();
        let raw = request.join().unwrap();
        assert!(raw.to_ascii_lowercase().contains(&basic("AC1", "tok")), "{raw}");
        assert!(raw.ends_with("To=%2B46701234567&From=%2B4610&Body=Code+1"), "{raw}");
    }

    #[tokio::test]
    async fn an_error_status_is_an_error_and_an_unreachable_gateway_too() {
        let gateway = HttpGateway::generic(&HttpSettings {
            url: "http://127.0.0.1:9/unreachable".into(),
            method: reqwest::Method::POST,
            headers: vec![],
            basic_auth: None,
            body: None,
            content_type: None,
            timeout: Duration::from_secs(2),
        })
        .unwrap();
        assert!(matches!(gateway.send_once("+4670", &Secret::new("x".into())).await, Err(SmsError::Transport(_))));
        assert!(SmsError::Status(503).is_transient() && !SmsError::Status(400).is_transient());
    }

    #[test]
    fn values_are_escaped_for_where_they_stand() {
        assert_eq!(
            fill(r#"{"to":"{to}","message":"{message}"}"#, "+4670", "a \"b\"\n", json_escaped),
            r#"{"to":"+4670","message":"a \"b\"\n"}"#
        );
        assert_eq!(fill("https://x/send?to={to}&m={message}", "+4670", "a b&c", percent), "https://x/send?to=%2B4670&m=a+b%26c");
    }
}
