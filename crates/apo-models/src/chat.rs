//! The checkpoint's own chat template (Jinja), rendered the way transformers' `apply_chat_template`
//! renders it.
//!
//! The template comes from `chat_template.json` (`{"chat_template": "..."}`, the processor's legacy
//! file, which transformers prefers), else `chat_template.jinja`, else the `chat_template` field of
//! `tokenizer_config.json` (a string, or a list of `{name, template}` of which `default` is used).
//! It is rendered with minijinja configured as transformers configures Jinja
//! (`trim_blocks`, `lstrip_blocks`, no trailing newline kept, `loopcontrols`, a `tojson` filter
//! that writes what Python's `json.dumps` writes, `raise_exception`, `strftime_now`), Python string
//! and dict methods through minijinja-contrib's `pycompat`, and the variables transformers passes:
//! `messages`, `add_generation_prompt`, `tools` and `documents` (none), and the named special
//! tokens of `tokenizer_config.json` (`bos_token`, `eos_token`, ...).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde_json::Value as Json;

use crate::error::{ModelError, Result};
use crate::tokenizer::{TokenizerConfig, read_json};

/// The processor's legacy template file.
pub const CHAT_TEMPLATE_JSON: &str = "chat_template.json";
/// The template file transformers 5 writes.
pub const CHAT_TEMPLATE_JINJA: &str = "chat_template.jinja";

/// The name the template is registered under in the environment.
const TEMPLATE_NAME: &str = "chat_template";

/// One block of a message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// An image, rendered as `{"type": "image"}`; the pixels are passed separately, in order.
    Image,
    /// Text, rendered as `{"type": "text", "text": ...}`.
    Text(String),
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `"system"`, `"user"`, `"assistant"`, ...
    pub role: String,
    /// The content blocks, in order.
    pub content: Vec<Content>,
}

impl Message {
    /// A message with the given role and content blocks.
    pub fn new(role: impl Into<String>, content: Vec<Content>) -> Self {
        Self {
            role: role.into(),
            content,
        }
    }

    /// A message with one text block.
    pub fn text(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self::new(role, vec![Content::Text(text.into())])
    }

    /// How many images the message holds.
    pub fn image_count(&self) -> usize {
        self.content
            .iter()
            .filter(|c| matches!(c, Content::Image))
            .count()
    }
}

/// A dict whose keys keep their insertion order (as Python dicts do), for the template.
#[derive(Debug)]
struct OrderedDict(Vec<(&'static str, Value)>);

impl Object for OrderedDict {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.iter().map(|(k, _)| Value::from(*k)).collect())
    }
}

impl Content {
    /// The dict transformers' templates see.
    fn to_value(&self) -> Value {
        Value::from_object(match self {
            Content::Image => OrderedDict(vec![("type", Value::from("image"))]),
            Content::Text(text) => OrderedDict(vec![
                ("type", Value::from("text")),
                ("text", Value::from(text.as_str())),
            ]),
        })
    }
}

impl Message {
    /// The dict transformers' templates see.
    fn to_value(&self) -> Value {
        let content: Vec<Value> = self.content.iter().map(Content::to_value).collect();
        Value::from_object(OrderedDict(vec![
            ("role", Value::from(self.role.as_str())),
            ("content", Value::from(content)),
        ]))
    }
}

/// A compiled chat template with the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    source_file: PathBuf,
    special_tokens: Vec<(String, String)>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_file", &self.source_file)
            .field("len", &self.source.len())
            .field("special_tokens", &self.special_tokens)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Loads the checkpoint's template (see the module docs for where it is looked for) and the
    /// special tokens of `dir/tokenizer_config.json`.
    ///
    /// # Errors
    /// [`ModelError::Template`] when the folder has no template or it does not parse,
    /// [`ModelError::Io`] / [`ModelError::Json`] for an unreadable or malformed file.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config = TokenizerConfig::from_dir(dir)?;
        let (source, source_file) = find_template(dir, &config)?;
        let special_tokens = config
            .special_tokens_map()?
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Self::new(source, source_file, special_tokens)
    }

    /// Compiles a template given as text. `source_file` names it in errors; `special_tokens` are
    /// the `(name, token)` variables the template sees (`("eos_token", "<|im_end|>")`, ...).
    ///
    /// # Errors
    /// [`ModelError::Template`] when the template does not parse.
    pub fn new(
        source: String,
        source_file: PathBuf,
        special_tokens: Vec<(String, String)>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |format: String| strftime_now(&format));
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| template_error(&source_file, &e))?;
        Ok(Self {
            env,
            source,
            source_file,
            special_tokens,
        })
    }

    /// Renders a conversation. With `add_generation_prompt` the template appends the opening of
    /// the assistant's turn.
    ///
    /// # Errors
    /// [`ModelError::Template`] when rendering fails (including the template's own
    /// `raise_exception`).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| template_error(&self.source_file, &e))?;
        let mut ctx: Vec<(String, Value)> = self
            .special_tokens
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        let messages: Vec<Value> = messages.iter().map(Message::to_value).collect();
        ctx.push(("messages".into(), Value::from(messages)));
        ctx.push(("tools".into(), Value::from(())));
        ctx.push(("documents".into(), Value::from(())));
        ctx.push((
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        ));
        let ctx: Value = ctx.into_iter().collect();
        template
            .render(ctx)
            .map_err(|e| template_error(&self.source_file, &e))
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The file the template came from.
    pub fn source_file(&self) -> &Path {
        &self.source_file
    }

    /// The special-token variables the template sees, in transformers' order.
    pub fn special_tokens(&self) -> &[(String, String)] {
        &self.special_tokens
    }
}

/// A minijinja error with its chain of causes, as a [`ModelError::Template`].
fn template_error(source_file: &Path, error: &minijinja::Error) -> ModelError {
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let _ = write!(message, ": {c}");
        cause = c.source();
    }
    ModelError::Template {
        source_file: source_file.to_path_buf(),
        message,
    }
}

/// Finds the template text and the file it is in.
fn find_template(dir: &Path, config: &TokenizerConfig) -> Result<(String, PathBuf)> {
    let json_path = dir.join(CHAT_TEMPLATE_JSON);
    if json_path.is_file() {
        let json = read_json(&json_path)?;
        return match json.get("chat_template") {
            Some(Json::String(s)) => Ok((s.clone(), json_path)),
            _ => Err(ModelError::Json {
                path: json_path,
                message: "field \"chat_template\": expected a string".into(),
            }),
        };
    }
    let jinja_path = dir.join(CHAT_TEMPLATE_JINJA);
    if jinja_path.is_file() {
        let text = std::fs::read_to_string(&jinja_path).map_err(|source| ModelError::Io {
            path: jinja_path.clone(),
            source,
        })?;
        return Ok((text, jinja_path));
    }
    match config.json.get("chat_template") {
        Some(Json::String(s)) => Ok((s.clone(), config.path.clone())),
        Some(Json::Array(list)) => {
            for entry in list {
                if entry.get("name").and_then(Json::as_str) == Some("default") {
                    return match entry.get("template") {
                        Some(Json::String(s)) => Ok((s.clone(), config.path.clone())),
                        _ => Err(ModelError::Json {
                            path: config.path.clone(),
                            message: "field \"chat_template\": the \"default\" entry has no string \"template\"".into(),
                        }),
                    };
                }
            }
            Err(ModelError::Template {
                source_file: config.path.clone(),
                message: "\"chat_template\" lists several templates but none is named \"default\""
                    .into(),
            })
        }
        None | Some(Json::Null) => Err(ModelError::Template {
            source_file: dir.to_path_buf(),
            message: format!(
                "the checkpoint has no chat template (no {CHAT_TEMPLATE_JSON}, no {CHAT_TEMPLATE_JINJA}, no \"chat_template\" in tokenizer_config.json)"
            ),
        }),
        Some(other) => Err(ModelError::Json {
            path: config.path.clone(),
            message: format!("field \"chat_template\": expected a string or a list, found {other}"),
        }),
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, with the same keyword arguments.
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(usize::try_from(n).unwrap_or(0))),
            (None, Some(s)) => Some(s.to_owned()),
            _ => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ));
            }
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() && !v.is_undefined() => {
            let a = v.get_item(&Value::from(0))?;
            let b = v.get_item(&Value::from(1))?;
            match (a.as_str(), b.as_str()) {
                (Some(a), Some(b)) => (a.to_owned(), b.to_owned()),
                _ => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    ));
                }
            }
        }
        _ => (
            if indent.is_some() { "," } else { ", " }.to_owned(),
            ": ".to_owned(),
        ),
    };
    let options = JsonOptions {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&mut out, value, &options, 0)?;
    Ok(Value::from_safe_string(out))
}

/// `json.dumps` settings.
struct JsonOptions {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// Writes a value as Python's `json.dumps` would.
fn write_json(
    out: &mut String,
    value: &Value,
    options: &JsonOptions,
    level: usize,
) -> std::result::Result<(), minijinja::Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(indent) = &options.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(indent);
            }
        }
    };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                let f = f64::try_from(value.clone()).map_err(|_| {
                    minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: not a number")
                })?;
                out.push_str(&python_float_repr(f));
            }
        }
        ValueKind::String => write_json_string(
            out,
            value.as_str().unwrap_or_default(),
            options.ensure_ascii,
        ),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&options.item_sep);
                }
                newline(out, level + 1);
                write_json(out, item, options, level + 1)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if options.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&options.item_sep);
                }
                newline(out, level + 1);
                match key.as_str() {
                    Some(s) => write_json_string(out, s, options.ensure_ascii),
                    None => write_json_string(out, &key.to_string(), options.ensure_ascii),
                }
                out.push_str(&options.key_sep);
                write_json(out, &value.get_item(key)?, options, level + 1)?;
            }
            newline(out, level);
            out.push('}');
        }
        _ => write_json_string(out, &value.to_string(), options.ensure_ascii),
    }
    Ok(())
}

/// A JSON string literal as Python's `json.dumps` writes it.
fn write_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` as `json.dumps` writes it (`NaN`, `Infinity` for non-finite values).
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Rust writes `1e16` / `1.5e-5`; Python writes `1e+16` / `1.5e-05`.
        let s = format!("{f:e}");
        if let Some((mantissa, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return format!("{mantissa}e{sign}{digits:0>2}");
        }
        return s;
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// `strftime_now(format)`: the current time (UTC) formatted with the common `strftime` codes
/// (`%Y %m %d %H %M %S %y %j %b %B %a %A %I %p %e %%`); other codes are kept as written.
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    strftime(format, secs)
}

/// Formats seconds since the Unix epoch (UTC) with the codes [`strftime_now`] knows.
fn strftime(format: &str, secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_march = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_march + 2) / 153;
    let day = doy_march - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let month_index = usize::try_from(month - 1).unwrap_or(0).min(11);
    let yday = cumulative[month_index] + day + u64::from(leap && month > 2);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = usize::try_from((days + 3) % 7).unwrap_or(0);
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year % 100),
            Some('m') => write!(out, "{month:02}"),
            Some('d') => write!(out, "{day:02}"),
            Some('e') => write!(out, "{day:>2}"),
            Some('j') => write!(out, "{yday:03}"),
            Some('H') => write!(out, "{hour:02}"),
            Some('I') => write!(out, "{hour12:02}"),
            Some('M') => write!(out, "{minute:02}"),
            Some('S') => write!(out, "{second:02}"),
            Some('p') => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            Some('B') => write!(out, "{}", MONTHS[month_index]),
            Some('b') => write!(out, "{}", &MONTHS[month_index][..3]),
            Some('A') => write!(out, "{}", DAYS[weekday]),
            Some('a') => write!(out, "{}", &DAYS[weekday][..3]),
            Some('%') => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_date() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %a %b %j %I%p %%", 1_709_211_909),
            "2024-02-29 13:05:09 Thu Feb 060 01PM %"
        );
        assert_eq!(strftime("%d %B %Y", 0), "01 January 1970");
    }

    #[test]
    fn float_repr_matches_python() {
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(0.1), "0.1");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(1.5e-5), "1.5e-05");
        assert_eq!(python_float_repr(-2.5), "-2.5");
    }

    #[test]
    fn renders_like_jinja() {
        let source = "{% for m in messages %}{{ m.role }}:{% for c in m.content %}{% if c.type == 'image' or 'image' in c %}<img>{% else %}{{ c.text | trim }}{% endif %}{% endfor %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}\n";
        let t = ChatTemplate::new(source.into(), "test".into(), vec![]).unwrap();
        let messages = [Message::new(
            "user",
            vec![Content::Image, Content::Text(" hi ".into())],
        )];
        assert_eq!(t.render(&messages, true).unwrap(), "user:<img>hiassistant:");
        let j = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ {'a': [1, 2.5, none, true]} | tojson(indent=2) }}"
                .into(),
            "t".into(),
            vec![],
        )
        .unwrap();
        assert_eq!(
            j.render(&[Message::text("user", "é\"\n")], false).unwrap(),
            "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"é\\\"\\n\"}]}|{\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ]\n}"
        );
        let e = ChatTemplate::new(
            "{{ raise_exception('nope') }}".into(),
            "t.jinja".into(),
            vec![],
        )
        .unwrap();
        let err = e.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("t.jinja"), "{err}");
        let s = ChatTemplate::new(
            "{{ 'Ab '.strip().lower() }}{{ eos_token }}".into(),
            "t".into(),
            vec![("eos_token".into(), "</s>".into())],
        )
        .unwrap();
        assert_eq!(s.render(&[], false).unwrap(), "ab</s>");
    }
}
