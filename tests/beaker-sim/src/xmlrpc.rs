//! The server side of XML-RPC as Beaker's hub speaks it (Python's `xmlrpc.client` with
//! `allow_none`): a `methodCall` read into JSON values, a `methodResponse` or `fault` written from
//! one.

use serde_json::{Map, Value};

/// A call: the method's dotted name and its parameters.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub params: Vec<Value>,
}

/// Reads a `methodCall` document.
pub(crate) fn read_call(body: &str) -> Result<Call, String> {
    let doc = roxmltree::Document::parse(body).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if !root.has_tag_name("methodCall") {
        return Err(format!(
            "expected <methodCall>, got <{}>",
            root.tag_name().name()
        ));
    }
    let method = child(root, "methodName")
        .and_then(|n| n.text())
        .ok_or("<methodCall> without <methodName>")?
        .trim()
        .to_owned();
    let mut params = Vec::new();
    if let Some(list) = child(root, "params") {
        for param in elements(list).filter(|n| n.has_tag_name("param")) {
            let value = child(param, "value").ok_or("<param> without <value>")?;
            params.push(decode(value)?);
        }
    }
    Ok(Call { method, params })
}

fn elements<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children().filter(roxmltree::Node::is_element)
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    elements(node).find(|n| n.has_tag_name(name))
}

/// One `<value>`: its typed element, or bare text (a string).
fn decode(value: roxmltree::Node<'_, '_>) -> Result<Value, String> {
    let Some(typed) = elements(value).next() else {
        return Ok(Value::String(value.text().unwrap_or("").to_owned()));
    };
    let text = typed.text().unwrap_or("").trim();
    Ok(match typed.tag_name().name() {
        "nil" => Value::Null,
        "boolean" => Value::Bool(text == "1"),
        "int" | "i4" | "i8" => Value::from(
            text.parse::<i64>()
                .map_err(|_| format!("bad integer `{text}`"))?,
        ),
        "double" => Value::from(
            text.parse::<f64>()
                .map_err(|_| format!("bad double `{text}`"))?,
        ),
        "string" => Value::String(typed.text().unwrap_or("").to_owned()),
        "dateTime.iso8601" | "base64" => Value::String(text.to_owned()),
        "array" => {
            let data = child(typed, "data").ok_or("<array> without <data>")?;
            Value::Array(
                elements(data)
                    .map(decode)
                    .collect::<Result<Vec<_>, String>>()?,
            )
        }
        "struct" => {
            let mut members = Map::new();
            for member in elements(typed) {
                let name = child(member, "name").and_then(|n| n.text()).unwrap_or("");
                let inner = child(member, "value").ok_or("<member> without <value>")?;
                members.insert(name.to_owned(), decode(inner)?);
            }
            Value::Object(members)
        }
        other => return Err(format!("unknown XML-RPC type <{other}>")),
    })
}

/// `&`, `<`, `>` and quotes as entities.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn encode(out: &mut String, value: &Value) {
    out.push_str("<value>");
    match value {
        Value::Null => out.push_str("<nil/>"),
        Value::Bool(b) => out.push_str(if *b {
            "<boolean>1</boolean>"
        } else {
            "<boolean>0</boolean>"
        }),
        Value::Number(n) if n.is_f64() => out.push_str(&format!("<double>{n}</double>")),
        Value::Number(n) => out.push_str(&format!("<int>{n}</int>")),
        Value::String(s) => out.push_str(&format!("<string>{}</string>", escape(s))),
        Value::Array(items) => {
            out.push_str("<array><data>");
            items.iter().for_each(|v| encode(out, v));
            out.push_str("</data></array>");
        }
        Value::Object(members) => {
            out.push_str("<struct>");
            for (name, v) in members {
                out.push_str(&format!("<member><name>{}</name>", escape(name)));
                encode(out, v);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>");
}

/// A `methodResponse` carrying `value`.
pub(crate) fn response(value: &Value) -> String {
    let mut out = String::from("<?xml version='1.0'?>\n<methodResponse><params><param>");
    encode(&mut out, value);
    out.push_str("</param></params></methodResponse>\n");
    out
}

/// A `fault` answer, as the hub gives one for every error (code 1).
pub(crate) fn fault(message: &str) -> String {
    let mut out = String::from("<?xml version='1.0'?>\n<methodResponse><fault>");
    let mut members = Map::new();
    members.insert("faultCode".into(), Value::from(1));
    members.insert("faultString".into(), Value::String(message.to_owned()));
    encode(&mut out, &Value::Object(members));
    out.push_str("</fault></methodResponse>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_with_every_type_reads_back() {
        let body = "<?xml version='1.0'?><methodCall><methodName>jobs.filter</methodName><params>\
            <param><value><struct><member><name>mine</name><value><boolean>1</boolean></value></member>\
            <member><name>limit</name><value><int>5</int></value></member>\
            <member><name>whiteboard</name><value>a &amp; b</value></member>\
            <member><name>tags</name><value><nil/></value></member></struct></value></param>\
            <param><value><array><data><value><string>J:1</string></value><value><double>1.5</double></value></data></array></value></param>\
            </params></methodCall>";
        let call = read_call(body).unwrap();
        assert_eq!(call.method, "jobs.filter");
        assert_eq!(
            call.params,
            vec![
                serde_json::json!({"mine": true, "limit": 5, "whiteboard": "a & b", "tags": null}),
                serde_json::json!(["J:1", 1.5]),
            ]
        );
    }

    #[test]
    fn a_fault_carries_code_1_and_the_message_escaped() {
        let text = fault("<class 'x'>:no & no");
        assert!(
            text.contains("<name>faultCode</name><value><int>1</int></value>"),
            "{text}"
        );
        assert!(
            text.contains("<string>&lt;class 'x'&gt;:no &amp; no</string>"),
            "{text}"
        );
    }
}
