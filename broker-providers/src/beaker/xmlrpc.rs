//! The client side of XML-RPC, as far as a Beaker hub needs it: a call written from JSON
//! parameters, an answer read into JSON (or the fault's text).

use serde_json::{Map, Value as Json};

/// Writes a `methodCall` of `method` with `params`.
pub(crate) fn call(method: &str, params: &[Json]) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\"?>\n<methodCall><methodName>{}</methodName><params>",
        escape(method)
    );
    for p in params {
        out.push_str("<param>");
        write_value(&mut out, p);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>\n");
    out
}

/// `&`, `<`, `>` and `"` as entities.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn write_value(out: &mut String, v: &Json) {
    let inner = match v {
        Json::Null => "<nil/>".to_owned(),
        Json::Bool(b) => format!("<boolean>{}</boolean>", u8::from(*b)),
        Json::Number(n) if n.is_i64() || n.is_u64() => format!("<int>{n}</int>"),
        Json::Number(n) => format!("<double>{n}</double>"),
        Json::String(s) => format!("<string>{}</string>", escape(s)),
        Json::Array(items) => {
            let mut s = String::from("<array><data>");
            items.iter().for_each(|i| write_value(&mut s, i));
            s + "</data></array>"
        }
        Json::Object(members) => {
            let mut s = String::from("<struct>");
            for (k, v) in members {
                s.push_str(&format!("<member><name>{}</name>", escape(k)));
                write_value(&mut s, v);
                s.push_str("</member>");
            }
            s + "</struct>"
        }
    };
    out.push_str("<value>");
    out.push_str(&inner);
    out.push_str("</value>");
}

/// What a hub answered: the value, or the fault's `faultString`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    Value(Json),
    Fault(String),
}

/// Reads a `methodResponse`; `Err` says why it is not one.
pub(crate) fn answer(body: &str) -> Result<Answer, String> {
    let doc = roxmltree::Document::parse(body).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    if !root.has_tag_name("methodResponse") {
        return Err(format!(
            "<{}> instead of <methodResponse>",
            root.tag_name().name()
        ));
    }
    let value_under = |path: &[&str]| {
        path.iter().try_fold(root, |node, name| {
            node.children().find(|n| n.has_tag_name(*name))
        })
    };
    if let Some(fault) = value_under(&["fault", "value"]) {
        let fault = read_value(fault)?;
        let text = fault
            .get("faultString")
            .and_then(Json::as_str)
            .unwrap_or("a fault without a faultString");
        return Ok(Answer::Fault(text.to_owned()));
    }
    let value = value_under(&["params", "param", "value"]).ok_or("no <params><param><value>")?;
    read_value(value).map(Answer::Value)
}

/// A `<value>` as JSON: structs as objects, dates and base64 as their text.
fn read_value(node: roxmltree::Node<'_, '_>) -> Result<Json, String> {
    let Some(typed) = node.children().find(roxmltree::Node::is_element) else {
        // No type element: a string.
        return Ok(Json::from(node.text().unwrap_or_default()));
    };
    let text = || typed.text().unwrap_or_default();
    let parsed = match typed.tag_name().name() {
        "string" => Json::from(text()),
        "int" | "i4" | "i8" => Json::from(text().trim().parse::<i64>().map_err(|e| e.to_string())?),
        "boolean" => Json::Bool(text().trim() == "1"),
        "double" => Json::from(text().trim().parse::<f64>().map_err(|e| e.to_string())?),
        "nil" => Json::Null,
        "dateTime.iso8601" | "base64" => Json::from(text().trim()),
        "array" => typed
            .descendants()
            .find(|n| n.has_tag_name("data"))
            .map(|data| {
                data.children()
                    .filter(|n| n.has_tag_name("value"))
                    .map(read_value)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .map_or(Json::Array(Vec::new()), Json::Array),
        "struct" => {
            let mut members = Map::new();
            for m in typed.children().filter(|n| n.has_tag_name("member")) {
                let mut name = None;
                let mut value = Json::Null;
                for part in m.children().filter(roxmltree::Node::is_element) {
                    match part.tag_name().name() {
                        "name" => name = part.text().map(str::to_owned),
                        "value" => value = read_value(part)?,
                        _ => {}
                    }
                }
                members.insert(name.unwrap_or_default(), value);
            }
            Json::Object(members)
        }
        other => return Err(format!("an XML-RPC value of unknown type <{other}>")),
    };
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_call_writes_each_type_escaped() {
        let text = call(
            "jobs.filter",
            &[
                json!({"whiteboard": "a<b & \"c\"", "mine": true, "limit": 3}),
                Json::Null,
            ],
        );
        assert!(
            text.contains("<methodName>jobs.filter</methodName>"),
            "{text}"
        );
        assert!(
            text.contains("<member><name>whiteboard</name><value><string>a&lt;b &amp; &quot;c&quot;</string></value></member>"),
            "{text}"
        );
        assert!(
            text.contains("<value><boolean>1</boolean></value>"),
            "{text}"
        );
        assert!(text.contains("<value><int>3</int></value>"), "{text}");
        assert!(
            text.contains("<param><value><nil/></value></param>"),
            "{text}"
        );
    }

    #[test]
    fn an_answer_reads_nested_values_and_a_fault_its_text() {
        let body = "<?xml version='1.0'?><methodResponse><params><param><value><struct>\
            <member><name>ids</name><value><array><data><value><string>J:1</string></value>\
            <value>J:2</value></data></array></value></member>\
            <member><name>done</name><value><boolean>0</boolean></value></member>\
            <member><name>mine</name><value><boolean>1</boolean></value></member>\
            <member><name>n</name><value><i4>-4</i4></value></member></struct></value></param></params></methodResponse>";
        assert_eq!(
            answer(body).unwrap(),
            Answer::Value(json!({"ids": ["J:1", "J:2"], "done": false, "mine": true, "n": -4}))
        );
        let fault = "<methodResponse><fault><value><struct><member><name>faultCode</name>\
            <value><int>1</int></value></member><member><name>faultString</name>\
            <value><string>&lt;class 'x'&gt;:no</string></value></member></struct></value></fault></methodResponse>";
        assert_eq!(
            answer(fault).unwrap(),
            Answer::Fault("<class 'x'>:no".into())
        );
        assert!(answer("<html>proxy error</html>").is_err());
    }
}
