//! A client of the server API over real HTTP, which checks every answer
//! against `docs/openapi.yaml`: the status must be documented for the
//! operation and the JSON body must match its schema.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yaml_rust2::{Yaml, YamlLoader};

/// The spec the node serves, as checked in.
pub const SPEC: &str = include_str!("../../docs/openapi.yaml");

/// One answer: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
    /// Response headers, lower-cased names.
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// The error `code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

/// Talks to one node's API with one key (or none).
pub struct ApiClient {
    addr: SocketAddr,
    key: Option<String>,
    spec: Yaml,
}

impl ApiClient {
    /// A client of the API at `addr` sending `key` as its bearer token.
    pub fn new(addr: SocketAddr, key: Option<&str>) -> ApiClient {
        let spec = YamlLoader::load_from_str(SPEC).expect("the spec is YAML").remove(0);
        ApiClient { addr, key: key.map(str::to_owned), spec }
    }

    /// `GET path` (with its query string).
    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, Some(body.to_string().as_bytes())).await
    }

    /// Any request, with a raw body; the answer is checked against the spec.
    pub async fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Answer {
        let answer = self.raw(method, path, body).await;
        if let Err(e) = self.conforms(method, path, &answer) {
            panic!("{method} {path} answered {} {}: {e}", answer.status, answer.body);
        }
        answer
    }

    /// A request whose answer is not checked against the spec.
    pub async fn raw(&self, method: &str, path: &str, body: Option<&[u8]>) -> Answer {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.expect("connect");
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr);
        if let Some(key) = &self.key {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        let body = body.unwrap_or_default();
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.write_all(body).await.expect("write body");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read response");
        let response = String::from_utf8(response).expect("UTF-8 response");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Answer { status, body: serde_json::from_str(body).unwrap_or(Value::Null), headers }
    }

    /// Whether the answer is one the spec documents for this request.
    fn conforms(&self, method: &str, path: &str, answer: &Answer) -> Result<(), String> {
        let path = path.split('?').next().unwrap_or_default();
        let operation = self.spec["paths"]
            .as_hash()
            .expect("paths")
            .iter()
            .find(|(template, _)| matches(template.as_str().unwrap_or_default(), path))
            .map(|(_, item)| &item[method.to_ascii_lowercase().as_str()])
            .ok_or("no such path in the spec")?;
        if operation.is_badvalue() {
            return Err("no such operation in the spec".into());
        }
        let response = &operation["responses"][answer.status.to_string().as_str()];
        if response.is_badvalue() {
            return Err(format!("status {} is not documented", answer.status));
        }
        let response = self.resolve(response);
        let schema = &response["content"]["application/json"]["schema"];
        if schema.is_badvalue() {
            return Ok(());
        }
        self.check(schema, &answer.body, "body")
    }

    fn resolve<'a>(&'a self, node: &'a Yaml) -> &'a Yaml {
        match node["$ref"].as_str() {
            Some(reference) => {
                let mut target = &self.spec;
                for part in reference.trim_start_matches("#/").split('/') {
                    target = &target[part];
                }
                self.resolve(target)
            }
            None => node,
        }
    }

    /// A small JSON Schema check: `type`, `required`, `properties`, `items`,
    /// `enum`, `minimum` — what the spec uses for responses.
    fn check(&self, schema: &Yaml, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema);
        if let Some(kind) = schema["type"].as_str() {
            let ok = match kind {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_u64() || value.is_i64(),
                "boolean" => value.is_boolean(),
                other => return Err(format!("{at}: unsupported type {other} in the spec")),
            };
            if !ok {
                return Err(format!("{at}: {value} is not a {kind}"));
            }
        }
        if let Some(min) = schema["minimum"].as_i64()
            && value.as_i64().is_some_and(|v| v < min)
        {
            return Err(format!("{at}: {value} is below {min}"));
        }
        if let Some(allowed) = schema["enum"].as_vec() {
            let listed = allowed.iter().any(|a| a.as_str() == value.as_str());
            if !listed {
                return Err(format!("{at}: {value} is not one of the spec's values"));
            }
        }
        if let Some(required) = schema["required"].as_vec() {
            for field in required.iter().filter_map(Yaml::as_str) {
                if value.get(field).is_none() {
                    return Err(format!("{at}: missing {field}"));
                }
            }
        }
        if let Some(properties) = schema["properties"].as_hash() {
            for (name, property) in properties {
                let name = name.as_str().unwrap_or_default();
                if let Some(field) = value.get(name) {
                    self.check(property, field, &format!("{at}.{name}"))?;
                }
            }
        }
        if let Some(values) = value.as_array()
            && !schema["items"].is_badvalue()
        {
            for (i, item) in values.iter().enumerate() {
                self.check(&schema["items"], item, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}

/// Whether a concrete path matches a spec template (`{name}` matches one segment).
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_one_segment_per_parameter() {
        assert!(matches("/api/v1/rooms/{room}/history", "/api/v1/rooms/lobby/history"));
        assert!(!matches("/api/v1/rooms/{room}/history", "/api/v1/rooms/history"));
        assert!(!matches("/api/v1/rooms", "/api/v1/rooms/lobby"));
    }

    #[test]
    fn answers_are_checked_against_the_schemas() {
        let client = ApiClient::new("127.0.0.1:9".parse().expect("addr"), None);
        let answer = |status, body| Answer { status, body, headers: Vec::new() };
        let ok = serde_json::json!({"epoch": "e", "seq": 1, "duplicate": false});
        let path = "/api/v1/rooms/lobby/messages";
        assert!(client.conforms("POST", path, &answer(200, ok)).is_ok());
        let wrong = serde_json::json!({"epoch": "e", "seq": "1", "duplicate": false});
        assert!(client.conforms("POST", path, &answer(200, wrong)).is_err());
        let error = serde_json::json!({"code": "no_such_code", "message": "x"});
        assert!(client.conforms("POST", path, &answer(400, error)).is_err());
        assert!(client.conforms("POST", path, &answer(418, Value::Null)).is_err());
        assert!(client.conforms("DELETE", path, &answer(200, Value::Null)).is_err());
    }
}
