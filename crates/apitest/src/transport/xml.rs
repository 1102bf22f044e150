//! XML replies (SOAP, as vSphere's `/sdk` speaks) as JSON, so the same
//! `jsonpath` asserts and captures read them:
//!
//! * an element is keyed by its local name (namespace prefixes dropped);
//! * an element with neither attributes nor child elements is its text;
//! * otherwise it is an object: attributes as `@name`, child elements by
//!   name — a name that repeats becomes a list in document order — and
//!   any text beside them as `#text`;
//! * the document is an object holding its root element.
//!
//! `<rootFolder type="Folder">group-d1</rootFolder>` is
//! `{"rootFolder": {"@type": "Folder", "#text": "group-d1"}}`, read as
//! `$..rootFolder['#text']`.

use std::collections::HashSet;

use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};
use serde_json::{Map, Value};

/// One element being read: its name, attributes and children so far.
struct Open {
    name: String,
    fields: Map<String, Value>,
    /// Child names seen more than once, whose field is the list of them
    /// (a lone child's own value may be a list too).
    repeated: HashSet<String>,
    text: String,
}

impl Open {
    fn value(self) -> Value {
        if self.fields.is_empty() {
            return Value::String(self.text);
        }
        let mut fields = self.fields;
        if !self.text.trim().is_empty() {
            fields.insert("#text".into(), Value::String(self.text));
        }
        Value::Object(fields)
    }

    fn add(&mut self, name: String, value: Value) {
        match self.fields.get_mut(&name) {
            None => {
                self.fields.insert(name, value);
            }
            Some(Value::Array(list)) if self.repeated.contains(&name) => list.push(value),
            Some(first) => {
                let first = std::mem::take(first);
                self.fields
                    .insert(name.clone(), Value::Array(vec![first, value]));
                self.repeated.insert(name);
            }
        }
    }
}

fn local(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.rsplit_once(':') {
        Some((_, local)) => local.to_owned(),
        None => name.into_owned(),
    }
}

fn open(e: &quick_xml::events::BytesStart<'_>) -> Option<Open> {
    let mut fields = Map::new();
    for attr in e.attributes() {
        let attr = attr.ok()?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .ok()?
            .into_owned();
        fields.insert(format!("@{}", local(key.as_bytes())), Value::String(value));
    }
    Some(Open {
        name: local(e.name().as_ref()),
        fields,
        repeated: HashSet::new(),
        text: String::new(),
    })
}

/// The document as JSON, or None when it is not well-formed XML.
pub fn to_json(body: &[u8]) -> Option<Value> {
    let mut reader = Reader::from_reader(body);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Value> = None;
    let mut buf = Vec::new();
    loop {
        let event = reader.read_event_into(&mut buf).ok()?;
        match event {
            Event::Start(e) => stack.push(open(&e)?),
            Event::Empty(e) => {
                let el = open(&e)?;
                let name = el.name.clone();
                let value = el.value();
                match stack.last_mut() {
                    Some(parent) => parent.add(name, value),
                    None => root = Some(Value::Object(Map::from_iter([(name, value)]))),
                }
            }
            Event::End(_) => {
                let el = stack.pop()?;
                let name = el.name.clone();
                let value = el.value();
                match stack.last_mut() {
                    Some(parent) => parent.add(name, value),
                    None => root = Some(Value::Object(Map::from_iter([(name, value)]))),
                }
            }
            Event::Text(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&t.xml10_content().ok()?);
                }
            }
            Event::CData(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref().ok()? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().ok()?;
                        quick_xml::escape::resolve_predefined_entity(&name)?.to_owned()
                    }
                };
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&text);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return None;
    }
    root
}

#[cfg(test)]
mod tests {
    use super::to_json;
    use serde_json::json;

    #[test]
    fn soap_reply_as_json() {
        let xml = br#"<?xml version="1.0"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<R xmlns="urn:vim25"><returnval><obj type="VirtualMachine">vm-1</obj><name>a &amp; b&#33;</name></returnval>
<returnval><obj type="VirtualMachine">vm-2</obj><empty/></returnval></R></soapenv:Body></soapenv:Envelope>"#;
        let v = to_json(xml).expect("parses");
        assert_eq!(
            v,
            json!({"Envelope": {"Body": {"R": {"returnval": [
                {"obj": {"@type": "VirtualMachine", "#text": "vm-1"}, "name": "a & b!"},
                {"obj": {"@type": "VirtualMachine", "#text": "vm-2"}, "empty": ""}
            ]}}}})
        );
    }

    #[test]
    fn not_xml_is_none() {
        assert!(to_json(b"<a><b></a>").is_none());
        assert!(to_json(b"plain text").is_none());
    }
}
