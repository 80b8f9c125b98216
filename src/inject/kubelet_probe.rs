//! A container's own `readinessProbe`, said in kubexit's probe syntax.
//!
//! A sidecar that already tells the kubelet when it is ready should not
//! have to say it twice: when a container is waited for (the main
//! containers wait for a sidecar) and no `kubexit.io/ready-probe.CONTAINER`
//! is given, its readinessProbe is translated. The kubelet's probe and kubexit's differ in one way that
//! matters here: kubexit probes from inside the container, so a probe
//! without a `host` goes to `127.0.0.1` (the kubelet goes to the pod's IP;
//! within the pod both reach a server listening on all addresses).
//!
//! | readinessProbe | kubexit probe |
//! |---|---|
//! | `tcpSocket: {port: P}` | `tcp://127.0.0.1:P` |
//! | `httpGet: {port: P, path: X, scheme: HTTPS}` | `https://127.0.0.1:P/X` |
//! | `exec: {command: [a, b]}` | `exec:a b` |
//!
//! Named ports are looked up in the container's `ports`. What kubexit
//! cannot say the same way (gRPC probes, HTTP headers, exec arguments with
//! white space, which `exec:` would split) is refused with the reason, so
//! the caller can ask for an explicit annotation instead of guessing. The
//! timing fields (`periodSeconds`...) are the kubelet's; kubexit probes at
//! its own pace until the first success.

use serde_json::Value;

use crate::readiness::probe::bracketed;

/// Translates `container`'s `readinessProbe`; `Ok(None)` when it has none.
pub fn readiness(container: &Value) -> Result<Option<String>, String> {
    let Some(probe) = container.get("readinessProbe") else {
        return Ok(None);
    };
    if let Some(tcp) = probe.get("tcpSocket") {
        let port = port(container, &tcp["port"])?;
        return Ok(Some(format!("tcp://{}:{port}", host(tcp))));
    }
    if let Some(http) = probe.get("httpGet") {
        if http
            .get("httpHeaders")
            .and_then(Value::as_array)
            .is_some_and(|h| !h.is_empty())
        {
            return Err(
                "its httpGet probe sends headers, which kubexit's http:// probe does not".into(),
            );
        }
        let port = port(container, &http["port"])?;
        let scheme = match http.get("scheme").and_then(Value::as_str) {
            None | Some("HTTP") => "http",
            Some("HTTPS") => "https",
            Some(other) => return Err(format!("its httpGet scheme {other:?} is unknown")),
        };
        let path = http.get("path").and_then(Value::as_str).unwrap_or("/");
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("its httpGet path {path:?} holds white space"));
        }
        let slash = if path.starts_with('/') { "" } else { "/" };
        return Ok(Some(format!(
            "{scheme}://{}:{port}{slash}{path}",
            host(http)
        )));
    }
    if let Some(exec) = probe.get("exec") {
        let words: Vec<&str> = exec["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if words.is_empty() {
            return Err("its exec probe has no command".into());
        }
        if words
            .iter()
            .any(|w| w.is_empty() || w.contains(char::is_whitespace))
        {
            return Err(
                "its exec probe has an argument with white space, which exec: would split".into(),
            );
        }
        return Ok(Some(format!("exec:{}", words.join(" "))));
    }
    if probe.get("grpc").is_some() {
        return Err("it is a gRPC probe, which kubexit does not speak".into());
    }
    Err("it has no tcpSocket, httpGet or exec handler".into())
}

/// The probe's `host` as a URL writes it (an IPv6 address bracketed, as
/// kubexit's probe syntax reads it).
fn host(handler: &Value) -> String {
    match handler.get("host").and_then(Value::as_str) {
        Some(host) if !host.is_empty() => bracketed(host),
        _ => "127.0.0.1".to_owned(),
    }
}

/// A port number, or a port name looked up in the container's ports.
fn port(container: &Value, port: &Value) -> Result<u16, String> {
    let valid = |n: u64| u16::try_from(n).ok().filter(|p| *p != 0);
    match port {
        Value::Number(n) => n
            .as_u64()
            .and_then(valid)
            .ok_or_else(|| format!("its port {n} is not a port number")),
        Value::String(name) => {
            if let Ok(n) = name.parse::<u64>() {
                return valid(n).ok_or_else(|| format!("its port {name:?} is not a port number"));
            }
            container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"].as_str() == Some(name))
                .and_then(|p| p["containerPort"].as_u64())
                .and_then(valid)
                .ok_or_else(|| format!("its port {name:?} is no named port of the container"))
        }
        _ => Err("it has no port".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tcp_http_and_exec_probes_translate() {
        let tcp = json!({"readinessProbe": {"tcpSocket": {"port": 5432}}});
        assert_eq!(readiness(&tcp).unwrap().unwrap(), "tcp://127.0.0.1:5432");
        let http = json!({
            "ports": [{"name": "admin", "containerPort": 9090}],
            "readinessProbe": {"httpGet": {"port": "admin", "path": "readiness", "scheme": "HTTPS"}}
        });
        assert_eq!(
            readiness(&http).unwrap().unwrap(),
            "https://127.0.0.1:9090/readiness"
        );
        let exec = json!({"readinessProbe": {"exec": {"command": ["pg_isready", "-q"]}}});
        assert_eq!(readiness(&exec).unwrap().unwrap(), "exec:pg_isready -q");
        let v6 = json!({"readinessProbe": {"tcpSocket": {"port": 1, "host": "::1"}}});
        assert_eq!(readiness(&v6).unwrap().unwrap(), "tcp://[::1]:1");
    }

    #[test]
    fn what_kubexit_cannot_say_the_same_way_is_refused() {
        for probe in [
            json!({"grpc": {"port": 9000}}),
            json!({"httpGet": {"port": 80, "httpHeaders": [{"name": "a", "value": "b"}]}}),
            json!({"exec": {"command": ["sh", "-c", "test -f /ready"]}}),
            json!({"tcpSocket": {"port": "nope"}}),
        ] {
            let container = json!({"readinessProbe": probe});
            assert!(readiness(&container).is_err(), "{container}");
        }
    }

    #[test]
    fn no_readiness_probe_is_none() {
        assert_eq!(readiness(&json!({"name": "x"})).unwrap(), None);
    }
}
