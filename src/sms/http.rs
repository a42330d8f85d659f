//! SMS over HTTP: a generic, templated request (`http`), and presets for 46elks and Twilio.
//!
//! `{to}` and `{message}` in the URL, body and form values are escaped for where they stand:
//! percent-encoded in URLs and forms, JSON-escaped in a JSON body.

use std::time::Duration;

use async_trait::async_trait;

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

/// The settings of a generic HTTP gateway.
pub struct HttpSettings {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, Secret<String>)>,
    pub basic_auth: Option<(String, Secret<String>)>,
    /// A body template; with `content_type` containing "json", values are JSON-escaped.
    pub body: Option<String>,
    pub content_type: Option<String>,
    pub timeout: Duration,
}

impl HttpGateway {
    pub fn generic(s: HttpSettings) -> Result<Self, String> {
        let method = reqwest::Method::from_bytes(s.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("unknown HTTP method {:?}", s.method))?;
        let has_body = s.body.is_some();
        Ok(Self {
            kind: "http",
            client: client(s.timeout)?,
            method,
            url: s.url,
            headers: s.headers,
            basic_auth: s.basic_auth,
            body: if has_body { BodyKind::Template } else { BodyKind::None },
            template: s.body.unwrap_or_default(),
            content_type: s.content_type.unwrap_or_else(|| "text/plain; charset=utf-8".into()),
            form: Vec::new(),
        })
    }

    /// 46elks: form POST with HTTP basic auth (API username and password).
    pub fn elks46(
        url: Option<String>,
        username: String,
        password: Secret<String>,
        from: String,
        timeout: Duration,
    ) -> Result<Self, String> {
        Self::form_preset(
            "46elks",
            url.unwrap_or_else(|| "https://api.46elks.com/a1/sms".into()),
            (username, password),
            vec![("from".into(), from), ("to".into(), "{to}".into()), ("message".into(), "{message}".into())],
            timeout,
        )
    }

    /// Twilio: form POST to the account's Messages resource, basic auth (account SID, auth token).
    pub fn twilio(
        url: Option<String>,
        account_sid: String,
        auth_token: Secret<String>,
        from: String,
        timeout: Duration,
    ) -> Result<Self, String> {
        let url = url.unwrap_or_else(|| format!("https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Messages.json"));
        Self::form_preset(
            "twilio",
            url,
            (account_sid, auth_token),
            vec![("To".into(), "{to}".into()), ("From".into(), from), ("Body".into(), "{message}".into())],
            timeout,
        )
    }

    fn form_preset(
        kind: &'static str,
        url: String,
        auth: (String, Secret<String>),
        form: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Self, String> {
        Ok(Self {
            kind,
            client: client(timeout)?,
            method: reqwest::Method::POST,
            url,
            headers: Vec::new(),
            basic_auth: Some(auth),
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

    #[test]
    fn values_are_escaped_for_where_they_stand() {
        assert_eq!(
            fill(r#"{"to":"{to}","message":"{message}"}"#, "+4670", "a \"b\"\n", json_escaped),
            r#"{"to":"+4670","message":"a \"b\"\n"}"#
        );
        assert_eq!(fill("https://x/send?to={to}&m={message}", "+4670", "a b&c", percent), "https://x/send?to=%2B4670&m=a+b%26c");
    }
}
