//! Kubernetes' YAML: text read into JSON the way kubectl, helm and the API server read it.
//!
//! All three read YAML through sigs.k8s.io/yaml, which decodes with go-yaml v2 into Go
//! values and marshals those to JSON. go-yaml v2 resolves plain (unquoted) scalars by the
//! YAML 1.1 table of its `resolve.go`, not by YAML 1.2's core schema, so a YAML 1.2 reader
//! gets these wrong (`defaultMode: 0755` must be 493, `enabled: no` must be `false`). The
//! rules, each checked against the real `kubectl` (`tests/tests/kube_yaml.rs`):
//!
//! - Only plain scalars are resolved; quoted and block (`|`, `>`) scalars are strings.
//! - `y Y yes Yes YES on On ON true True TRUE` are `true`; `n N no No NO off Off OFF false
//!   False FALSE` are `false`; `~ null Null NULL` and the empty scalar are null. Other case
//!   mixes (`yES`, `nULL`) are strings.
//! - Integers: underscores are dropped, then Go's `ParseInt(s, 0, 64)` decides: decimal,
//!   `0x`/`0X` hex, `0o`/`0O` and a leading `0` octal (`0755` and `0o755` are 493), `0b`/`0B`
//!   binary, an optional sign. Out of `int64` but within `uint64` is still an integer.
//! - Floats: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` (so `1e3`, `1.`, `.5`,
//!   and `08`, `09`, which are not octal), `.inf`, `-.inf`, `+.inf`, `.nan` in their three
//!   spellings. A float out of range (`1e400`) is a string. NaN and the infinities have no
//!   JSON form: an error, as in kubectl.
//! - Sexagesimal numbers (`190:20:30`) are strings: go-yaml v2 dropped them on purpose.
//!   Timestamps (`2001-12-14`) are strings too (go-yaml v2 keeps them as text when decoding
//!   into an untyped value).
//! - Tags: `!!str` keeps the text, `!!binary` is base64-decoded, `!!int`, `!!float`, `!!bool`,
//!   `!!null`, `!!timestamp` resolve the text and refuse a mismatch (`!!int "0755"` is 493,
//!   `!!int abc` is an error), `!!float 2` is 2.0; any other tag (`!foo`, the bare `!`) makes
//!   the scalar a string.
//! - Merge keys (`<<`) as go-yaml v2 applies them: entries are set in document order, so a
//!   key written *before* the merge is overwritten by the merged mapping (v2's behaviour,
//!   which kubectl and helm keep); in a sequence of merged mappings the earlier wins.
//! - Mapping keys are resolved like values and then written as JSON keys: integers in
//!   decimal (`0755: x` is `"493"`), booleans as `"true"`/`"false"` (so a key `y` or `n` is
//!   `"true"`/`"false"`), floats as Go's `%g` of a float32 (`1e6` is `"1e+06"`). A null key,
//!   and an integer key beyond `int64`, are errors (sigs.k8s.io/yaml refuses them).
//! - Duplicate keys: the last wins (kubectl and helm), unless the caller refuses them.
//! - Numbers in the JSON are what kubectl sends after its own decoding: a float Go prints
//!   as an integer that fits `int64` is an integer (`1e3` is `1000`, never `1000.0`, which
//!   the API server refuses for an integer field); a `uint64` beyond `int64` is a float.
//!
//! Only the first document of the text is read (as go-yaml's `Unmarshal`). Nesting is
//! bounded ([`MAX_DEPTH`]) and so is alias expansion (go-yaml v2's limit on the share of
//! nodes that come from aliases), so a hostile document cannot exhaust the stack or memory.
//!
//! Pure: text in, JSON out.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use base64::Engine as _;
use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

/// Deepest nesting of collections read (aliases expanded), as serde_yaml's limit was before.
pub const MAX_DEPTH: usize = 256;

/// The long form of the YAML 1.1 tags (`!!int` is `tag:yaml.org,2002:int`).
const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// What to do with a key written twice in one mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicateKeys {
    /// The last one wins, as in kubectl and helm.
    LastWins,
    /// An error naming the second one (the YAML specification forbids duplicates).
    Refuse,
}

/// Why a text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The text is not YAML, or breaks a rule at a place in it (an alias of an unfinished
    /// anchor, a refused duplicate key, too deep a nesting).
    #[error("line {line} column {column}: {message}")]
    Syntax {
        /// 1-based line in the text.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// The YAML is well formed, but a value of it has no JSON form (NaN, a null key, a
    /// `!!int` that is not an integer).
    #[error("{path}: {problem}")]
    Value {
        /// Dotted path of the offending value (`a.b[2]`), `.` for the top level.
        path: String,
        /// What is wrong there.
        problem: String,
    },
}

fn at(mark: Marker, message: impl Into<String>) -> Error {
    Error::Syntax {
        line: mark.line(),
        column: mark.col() + 1,
        message: message.into(),
    }
}

fn scan_error(e: &ScanError) -> Error {
    at(*e.marker(), e.info())
}

/// Reads the first YAML document of `text` as JSON (`null` when there is none).
pub fn first_document(text: &str, duplicates: DuplicateKeys) -> Result<Value, Error> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
    };
    loop {
        let (event, mark) = builder.next()?;
        match event {
            Event::StreamEnd => return Ok(Value::Null),
            Event::DocumentStart => {
                let (event, mark) = builder.next()?;
                let root = builder.node(event, mark, 0)?;
                // The document's end is where trailing garbage after the root shows.
                builder.next()?;
                let mut decoder = Decoder {
                    duplicates,
                    decoded: 0,
                    via_alias: 0,
                    alias_depth: 0,
                    path: Vec::new(),
                };
                return decoder.decode(&root);
            }
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => {}
            other => return Err(at(mark, format!("unexpected {other:?} outside a document"))),
        }
    }
}

/// A parsed node, before its scalars are resolved.
struct Node {
    kind: NodeKind,
    /// Where it starts.
    mark: Marker,
}

enum NodeKind {
    Scalar {
        value: String,
        style: TScalarStyle,
        /// The tag in long form (`tag:yaml.org,2002:int`, `!foo`, `!`).
        tag: Option<String>,
    },
    Sequence(Vec<Rc<Node>>),
    Mapping(Vec<(Rc<Node>, Rc<Node>)>),
    /// An alias: the anchored node it stands for.
    Alias(Rc<Node>),
}

/// Builds the node tree of one document from the parser's events.
struct Builder<'a> {
    parser: Parser<std::str::Chars<'a>>,
    /// Finished anchored nodes by the parser's anchor id.
    anchors: HashMap<usize, Rc<Node>>,
}

impl Builder<'_> {
    fn next(&mut self) -> Result<(Event, Marker), Error> {
        self.parser.next_token().map_err(|e| scan_error(&e))
    }

    fn node(&mut self, event: Event, mark: Marker, depth: usize) -> Result<Rc<Node>, Error> {
        if depth > MAX_DEPTH {
            return Err(at(mark, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let (anchor, kind) = match event {
            Event::Alias(id) => {
                let target = self.anchors.get(&id).cloned().ok_or_else(|| {
                    at(
                        mark,
                        "an alias refers to the anchored node that contains it",
                    )
                })?;
                return Ok(Rc::new(Node {
                    kind: NodeKind::Alias(target),
                    mark,
                }));
            }
            Event::Scalar(value, style, anchor, tag) => (
                anchor,
                NodeKind::Scalar {
                    value,
                    style,
                    tag: tag.map(long_tag),
                },
            ),
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (event, mark) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(event, mark, depth + 1)?);
                }
                (anchor, NodeKind::Sequence(items))
            }
            Event::MappingStart(anchor, _) => {
                let mut entries = Vec::new();
                loop {
                    let (event, mark) = self.next()?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(event, mark, depth + 1)?;
                    let (event, mark) = self.next()?;
                    let value = self.node(event, mark, depth + 1)?;
                    entries.push((key, value));
                }
                (anchor, NodeKind::Mapping(entries))
            }
            other => return Err(at(mark, format!("unexpected {other:?}"))),
        };
        let node = Rc::new(Node { kind, mark });
        if anchor != 0 {
            self.anchors.insert(anchor, Rc::clone(&node));
        }
        Ok(node)
    }
}

fn long_tag(tag: Tag) -> String {
    let mut long = tag.handle;
    long.push_str(&tag.suffix);
    long
}

/// Turns the node tree into JSON, as go-yaml v2 decodes into `interface{}` and
/// sigs.k8s.io/yaml converts that to JSON.
struct Decoder {
    duplicates: DuplicateKeys,
    /// Nodes decoded so far, and how many of them through an alias (go-yaml v2's
    /// `decodeCount` and `aliasCount`).
    decoded: usize,
    via_alias: usize,
    alias_depth: usize,
    /// Where the decoder is, for error messages: `.key` and `[i]` segments.
    path: Vec<String>,
}

impl Decoder {
    fn value_error(&self, problem: impl Into<String>) -> Error {
        Error::Value {
            path: render_path(&self.path),
            problem: problem.into(),
        }
    }

    /// Counts one decoded node and refuses a document that is mostly alias expansion (a
    /// "billion laughs"), with go-yaml v2's thresholds.
    fn count(&mut self) -> Result<(), Error> {
        self.decoded += 1;
        if self.alias_depth > 0 {
            self.via_alias += 1;
        }
        if self.via_alias > 100
            && self.decoded > 1000
            && self.via_alias as f64 / self.decoded as f64 > allowed_alias_ratio(self.decoded)
        {
            return Err(self.value_error("the document contains excessive aliasing"));
        }
        if self.path.len() > MAX_DEPTH {
            return Err(self.value_error(format!(
                "nested deeper than {MAX_DEPTH} levels once aliases are expanded"
            )));
        }
        Ok(())
    }

    fn decode(&mut self, node: &Node) -> Result<Value, Error> {
        self.count()?;
        match &node.kind {
            NodeKind::Alias(target) => {
                self.alias_depth += 1;
                let value = self.decode(target);
                self.alias_depth -= 1;
                value
            }
            NodeKind::Scalar { value, style, tag } => {
                let resolved = resolve(value, *style, tag.as_deref())
                    .map_err(|problem| self.value_error(problem))?;
                resolved
                    .into_json(value)
                    .map_err(|problem| self.value_error(problem))
            }
            NodeKind::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    self.path.push(format!("[{i}]"));
                    out.push(self.decode(item)?);
                    self.path.pop();
                }
                Ok(Value::Array(out))
            }
            NodeKind::Mapping(entries) => {
                let mut out = Map::new();
                self.mapping_into(entries, &mut out)?;
                Ok(Value::Object(out))
            }
        }
    }

    /// Sets the entries of a mapping into `out`, in document order (go-yaml v2).
    fn mapping_into(
        &mut self,
        entries: &[(Rc<Node>, Rc<Node>)],
        out: &mut Map<String, Value>,
    ) -> Result<(), Error> {
        let mut written = HashSet::new();
        for (key, value) in entries {
            if is_merge_key(key) {
                self.path.push(".<<".to_owned());
                self.merge(value, out)?;
                self.path.pop();
                continue;
            }
            let name = self.key(key)?;
            if self.duplicates == DuplicateKeys::Refuse && !written.insert(name.clone()) {
                return Err(at(key.mark, format!("duplicate key `{name}` in a mapping")));
            }
            self.path.push(format!(".{name}"));
            let value = self.decode(value)?;
            self.path.pop();
            out.insert(name, value);
        }
        Ok(())
    }

    /// A merge (`<<: value`): a mapping, an alias of one, or a sequence of those, of which
    /// the earlier wins.
    fn merge(&mut self, value: &Node, out: &mut Map<String, Value>) -> Result<(), Error> {
        match &value.kind {
            NodeKind::Sequence(items) => {
                for item in items.iter().rev() {
                    self.merge_one(item, out)?;
                }
                Ok(())
            }
            _ => self.merge_one(value, out),
        }
    }

    fn merge_one(&mut self, value: &Node, out: &mut Map<String, Value>) -> Result<(), Error> {
        const WANT_MAP: &str = "a merge (`<<`) needs a mapping or a sequence of mappings";
        self.count()?;
        match &value.kind {
            NodeKind::Mapping(entries) => self.mapping_into(entries, out),
            NodeKind::Alias(target) => match &target.kind {
                NodeKind::Mapping(entries) => {
                    self.alias_depth += 1;
                    let merged = self.count().and_then(|()| self.mapping_into(entries, out));
                    self.alias_depth -= 1;
                    merged
                }
                _ => Err(self.value_error(WANT_MAP)),
            },
            _ => Err(self.value_error(WANT_MAP)),
        }
    }

    /// A mapping key as its JSON key (sigs.k8s.io/yaml's conversion of go-yaml's key).
    fn key(&mut self, key: &Node) -> Result<String, Error> {
        self.count()?;
        let key = match &key.kind {
            NodeKind::Alias(target) => target,
            _ => key,
        };
        let NodeKind::Scalar { value, style, tag } = &key.kind else {
            return Err(self.value_error("a mapping key must be a scalar"));
        };
        let resolved =
            resolve(value, *style, tag.as_deref()).map_err(|problem| self.value_error(problem))?;
        resolved
            .into_key(value)
            .map_err(|problem| self.value_error(problem))
    }
}

/// go-yaml v2's `allowedAliasRatio`: 99% of nodes may come from aliases in documents of up
/// to 400,000 nodes, scaling down to 10% at 4,000,000.
fn allowed_alias_ratio(decoded: usize) -> f64 {
    const LOW: f64 = 400_000.0;
    const HIGH: f64 = 4_000_000.0;
    let decoded = decoded as f64;
    if decoded <= LOW {
        0.99
    } else if decoded >= HIGH {
        0.10
    } else {
        0.99 - 0.89 * ((decoded - LOW) / (HIGH - LOW))
    }
}

fn render_path(path: &[String]) -> String {
    let joined: String = path.concat();
    match joined.strip_prefix('.') {
        Some(rest) => rest.to_owned(),
        None if joined.is_empty() => ".".to_owned(),
        None => joined,
    }
}

/// `<<` written plain (or tagged `!!merge`, or with the non-specific `!`) is a merge key.
fn is_merge_key(key: &Node) -> bool {
    let NodeKind::Scalar { value, style, tag } = &key.kind else {
        return false;
    };
    value == "<<"
        && match tag.as_deref() {
            None => *style == TScalarStyle::Plain,
            Some(tag) => tag == "!" || tag.strip_prefix(CORE_TAG_PREFIX) == Some("merge"),
        }
}

/// A scalar resolved as go-yaml v2 resolves it into an untyped Go value.
#[derive(Clone, Debug, PartialEq)]
enum Resolved {
    Null,
    Bool(bool),
    /// Go's `int`.
    Int(i64),
    /// Go's `uint64`: an integer beyond `int64`.
    Uint(u64),
    Float(f64),
    Str(String),
}

/// The YAML 1.1 type a scalar resolved to, by the name of its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Str,
    Timestamp,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Str => "str",
            Kind::Timestamp => "timestamp",
        }
    }
}

impl Resolved {
    /// The JSON value, as kubectl sends it.
    fn into_json(self, text: &str) -> Result<Value, String> {
        Ok(match self {
            Resolved::Null => Value::Null,
            Resolved::Bool(b) => Value::Bool(b),
            Resolved::Int(i) => Value::from(i),
            // kubectl decodes JSON numbers as int64, else float64.
            Resolved::Uint(u) => float_json(u as f64, text)?,
            Resolved::Float(f) => float_json(f, text)?,
            Resolved::Str(s) => Value::String(s),
        })
    }

    /// The JSON key.
    fn into_key(self, text: &str) -> Result<String, String> {
        match self {
            Resolved::Str(s) => Ok(s),
            Resolved::Int(i) => Ok(i.to_string()),
            Resolved::Bool(b) => Ok(b.to_string()),
            Resolved::Float(f) => Ok(go_format_g32(f)),
            Resolved::Null => Err(format!(
                "a mapping key must not be null (the key `{text}`; quote it to mean the text)"
            )),
            Resolved::Uint(_) => Err(format!(
                "the mapping key {text} is beyond a 64-bit signed integer (quote it to mean the text)"
            )),
        }
    }
}

/// A float as kubectl sends it. Go's JSON encoder prints a float in fixed notation below
/// 1e21, with its shortest round-trip digits padded with zeros (2^63 prints as
/// `9223372036854776000`), and Kubernetes decodes a number that parses as an `int64` as an
/// integer: so `1e3` is the integer 1000, while 2^63 stays a float.
fn float_json(f: f64, text: &str) -> Result<Value, String> {
    if !f.is_finite() {
        return Err(format!("{text} cannot be represented in JSON"));
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        let (digits, exponent) = shortest_digits(&format!("{:e}", f.abs()));
        // Integral: the point sits at or after the last significant digit.
        let point = usize::try_from(exponent + 1).unwrap_or(0);
        let fixed = format!(
            "{}{digits}{}",
            if f.is_sign_negative() { "-" } else { "" },
            "0".repeat(point.saturating_sub(digits.len()))
        );
        if let Ok(i) = fixed.parse::<i64>() {
            return Ok(Value::from(i));
        }
    }
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("{text} cannot be represented in JSON"))
}

/// The significant digits and the decimal exponent of a float printed by `{:e}` (which
/// prints the shortest digits that read back as the same float): `1.2345e-5` is
/// (`12345`, -5).
fn shortest_digits(sci: &str) -> (String, i32) {
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci, "0"));
    let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exponent.parse().unwrap_or(0))
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`: the shortest digits of `f` as a float32,
/// with an exponent (`1e+06`, `1e-05`) below 1e-4 and from 1e6 on; YAML's spellings for the
/// infinities and NaN.
fn go_format_g32(f: f64) -> String {
    let f = f as f32;
    if f.is_nan() {
        return ".nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_owned();
    }
    let (digits, exponent) = shortest_digits(&format!("{:e}", f.abs()));
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if !(-4..6).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}{rest}e{exp_sign}{:02}", exponent.abs());
    }
    // Fixed notation: the decimal point sits after `exponent + 1` digits.
    let point = exponent + 1;
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else {
        let point = point as usize;
        if point >= digits.len() {
            format!("{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    };
    format!("{sign}{body}")
}

/// Resolves a scalar by its style and tag (go-yaml v2's `decoder.scalar` and `resolve`).
/// Errors are problems, without a location.
fn resolve(value: &str, style: TScalarStyle, tag: Option<&str>) -> Result<Resolved, String> {
    let Some(tag) = tag else {
        if style != TScalarStyle::Plain {
            return Ok(Resolved::Str(value.to_owned()));
        }
        return Ok(implicit(value).1);
    };
    let want = match tag.strip_prefix(CORE_TAG_PREFIX) {
        Some("str") => return Ok(Resolved::Str(value.to_owned())),
        Some("binary") => return binary(value),
        Some(want @ ("null" | "bool" | "int" | "float" | "timestamp")) => want,
        // Any other tag is not resolvable: the text stays a string.
        _ => return Ok(Resolved::Str(value.to_owned())),
    };
    let (kind, resolved) = implicit(value);
    match (want, kind, resolved) {
        (want, kind, resolved) if kind.tag() == want => Ok(resolved),
        ("float", Kind::Int, Resolved::Int(i)) => Ok(Resolved::Float(i as f64)),
        (want, kind, _) => Err(format!(
            "cannot decode !!{} `{value}` as a !!{want}",
            kind.tag()
        )),
    }
}

/// `!!binary`: base64 (line breaks ignored), the bytes read as text.
fn binary(value: &str) -> Result<Resolved, String> {
    let compact: String = value
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| "!!binary value contains invalid base64 data".to_owned())?;
    Ok(Resolved::Str(String::from_utf8_lossy(&bytes).into_owned()))
}

/// go-yaml v2's `resolve("", s)`: the implicit type of a plain scalar.
fn implicit(s: &str) -> (Kind, Resolved) {
    let string = || (Kind::Str, Resolved::Str(s.to_owned()));
    // The first character hints at what the scalar may be (resolve.go's `resolveTable`).
    let hint = match s.as_bytes().first() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => return string(),
    };
    if let Some(known) = lookup(s) {
        return known;
    }
    match hint {
        b'.' => {
            if let Some(f) = parse_dot_float(s) {
                return (Kind::Float, Resolved::Float(f));
            }
        }
        b'D' | b'S' => {
            if is_timestamp(s) {
                // Kept as text when decoded into an untyped value.
                return (Kind::Timestamp, Resolved::Str(s.to_owned()));
            }
            let plain: String = s.chars().filter(|c| *c != '_').collect();
            if let Some(i) = parse_int(&plain, 0) {
                return (Kind::Int, Resolved::Int(i));
            }
            if let Some(u) = parse_uint(&plain, 0) {
                return (Kind::Int, Resolved::Uint(u));
            }
            if is_yaml_float(&plain)
                && let Ok(f) = plain.parse::<f64>()
                && f.is_finite()
            {
                return (Kind::Float, Resolved::Float(f));
            }
            // resolve.go's own `0b` and `-0b` parsing, which also takes a sign after `0b`.
            if let Some(rest) = plain.strip_prefix("0b") {
                if let Some(i) = parse_int(rest, 2) {
                    return (Kind::Int, Resolved::Int(i));
                }
                if let Some(u) = parse_uint(rest, 2) {
                    return (Kind::Int, Resolved::Uint(u));
                }
            } else if let Some(rest) = plain.strip_prefix("-0b")
                && let Some(i) = parse_int(&format!("-{rest}"), 2)
            {
                return (Kind::Int, Resolved::Int(i));
            }
        }
        _ => {}
    }
    string()
}

/// The scalars resolve.go looks up by their exact text.
fn lookup(s: &str) -> Option<(Kind, Resolved)> {
    Some(match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            (Kind::Bool, Resolved::Bool(true))
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            (Kind::Bool, Resolved::Bool(false))
        }
        "" | "~" | "null" | "Null" | "NULL" => (Kind::Null, Resolved::Null),
        ".nan" | ".NaN" | ".NAN" => (Kind::Float, Resolved::Float(f64::NAN)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            (Kind::Float, Resolved::Float(f64::INFINITY))
        }
        "-.inf" | "-.Inf" | "-.INF" => (Kind::Float, Resolved::Float(f64::NEG_INFINITY)),
        _ => return None,
    })
}

/// Go's `strconv.ParseUint(s, base, 64)` for base 0 (prefixes `0x`, `0o`, `0b`, and a
/// leading `0` for octal) or an explicit base; no sign, no underscores (removed before).
fn parse_uint(s: &str, base: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let (base, digits) = if base == 0 {
        let bytes = s.as_bytes();
        if bytes[0] == b'0' {
            match bytes.get(1).map(u8::to_ascii_lowercase) {
                Some(b'b') if s.len() >= 3 => (2, &s[2..]),
                Some(b'o') if s.len() >= 3 => (8, &s[2..]),
                Some(b'x') if s.len() >= 3 => (16, &s[2..]),
                _ => (8, &s[1..]),
            }
        } else {
            (10, s)
        }
    } else {
        (base, s)
    };
    // `0` alone leaves no digits after its octal prefix: that is zero.
    let mut n: u64 = 0;
    for c in digits.chars() {
        let d = c.to_digit(base)?;
        n = n.checked_mul(u64::from(base))?.checked_add(u64::from(d))?;
    }
    Some(n)
}

/// Go's `strconv.ParseInt(s, base, 64)`: an optional sign, then [`parse_uint`] within
/// `int64`.
fn parse_int(s: &str, base: u32) -> Option<i64> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_uint(rest, base)?;
    if negative {
        if magnitude == 1 << 63 {
            Some(i64::MIN)
        } else {
            i64::try_from(magnitude).ok().map(|m| -m)
        }
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// resolve.go's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => all_digits(fraction),
        Some((int, fraction)) => all_digits(int) && fraction.bytes().all(|b| b.is_ascii_digit()),
        None => all_digits(mantissa),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => all_digits(e.strip_prefix(['-', '+']).unwrap_or(e)),
    };
    mantissa_ok && exponent_ok
}

/// Go's `strconv.ParseFloat` of a scalar starting with `.` (`.5`, `.5e3`, `.1_5`): digits
/// after the point, an optional exponent, underscores only between digits.
fn parse_dot_float(s: &str) -> Option<f64> {
    if !underscores_between_digits(s) {
        return None;
    }
    let plain: String = s.chars().filter(|c| *c != '_').collect();
    if !is_yaml_float(&plain) {
        return None;
    }
    plain.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Go's `underscoreOK` for a number without a base prefix: after an optional sign, every
/// `_` follows a digit and is followed by one.
fn underscores_between_digits(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    // What came last: '^' the start, '0' a digit, '_' an underscore, '!' anything else.
    let mut saw = '^';
    for b in s.bytes() {
        saw = match b {
            b'0'..=b'9' => '0',
            b'_' if saw == '0' => '_',
            b'_' => return false,
            _ if saw == '_' => return false,
            _ => '!',
        };
    }
    saw != '_'
}

/// Whether `s` is a timestamp of one of go-yaml v2's layouts: `2006-1-2`, optionally followed
/// by `T`, `t` or a space and `15:4:5` with an optional fraction, and after `T`/`t` a zone
/// (`Z` or `±07:00`).
fn is_timestamp(s: &str) -> bool {
    fn number(s: &str, min_len: usize, max_len: usize, max: u32) -> Option<(u32, &str)> {
        let len = s.bytes().take_while(u8::is_ascii_digit).count();
        if len < min_len || len > max_len {
            return None;
        }
        let n: u32 = s[..len].parse().ok()?;
        (n <= max).then_some((n, &s[len..]))
    }
    let date = || -> Option<&str> {
        let (_, rest) = number(s, 4, 4, 9999)?;
        let (month, rest) = number(rest.strip_prefix('-')?, 1, 2, 12)?;
        let (day, rest) = number(rest.strip_prefix('-')?, 1, 2, 31)?;
        (month >= 1 && day >= 1).then_some(rest)
    };
    let Some(rest) = date() else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let (zoned, time) = match rest.as_bytes()[0] {
        b'T' | b't' => (true, &rest[1..]),
        b' ' => (false, &rest[1..]),
        _ => return false,
    };
    let clock = || -> Option<&str> {
        let (_, rest) = number(time, 1, 2, 23)?;
        let (_, rest) = number(rest.strip_prefix(':')?, 1, 2, 59)?;
        let (_, rest) = number(rest.strip_prefix(':')?, 1, 2, 59)?;
        match rest.strip_prefix('.') {
            Some(fraction) => {
                let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
                (len > 0).then_some(&fraction[len..])
            }
            None => Some(rest),
        }
    };
    let Some(zone) = clock() else {
        return false;
    };
    if !zoned {
        return zone.is_empty();
    }
    if zone == "Z" {
        return true;
    }
    let Some(offset) = zone.strip_prefix(['+', '-']) else {
        return false;
    };
    let hours_minutes = || -> Option<()> {
        let (_, rest) = number(offset, 2, 2, 99)?;
        let (_, rest) = number(rest.strip_prefix(':')?, 2, 2, 99)?;
        rest.is_empty().then_some(())
    };
    hours_minutes().is_some()
}

#[cfg(test)]
mod tests {
    //! The resolution table against hand-written expectations; the same cases, and more,
    //! are checked against the real kubectl in `tests/tests/kube_yaml.rs`.

    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Value {
        first_document(text, DuplicateKeys::LastWins).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn value(scalar: &str) -> Value {
        read(&format!("v: {scalar}\n"))["v"].clone()
    }

    fn error(text: &str) -> String {
        match first_document(text, DuplicateKeys::LastWins) {
            Ok(v) => panic!("{text}: expected an error, read {v}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn plain_scalars_resolve_as_yaml_1_1() {
        let cases: &[(&str, Value)] = &[
            ("0755", json!(493)),
            ("0o755", json!(493)),
            ("0O17", json!(15)),
            ("0x1F", json!(31)),
            ("0X1f", json!(31)),
            ("-0x10", json!(-16)),
            ("+0x10", json!(16)),
            ("0b101", json!(5)),
            ("0B11", json!(3)),
            ("-0b101", json!(-5)),
            ("0b-101", json!(-5)),
            ("1_000", json!(1000)),
            ("0x_1F", json!(31)),
            ("08", json!(8)),
            ("0", json!(0)),
            ("-0", json!(0)),
            ("1e3", json!(1000)),
            ("1.5", json!(1.5)),
            ("1.", json!(1)),
            (".5", json!(0.5)),
            ("+.5", json!(0.5)),
            (".1_5", json!(0.15)),
            ("-0.0", json!(0)),
            ("1_000.5", json!(1000.5)),
            ("9223372036854775807", json!(9223372036854775807_i64)),
            ("-9223372036854775808", json!(-9223372036854775808_i64)),
            ("9223372036854775808", json!(9223372036854775808.0)),
            ("1e400", json!("1e400")),
            ("190:20:30", json!("190:20:30")),
            ("2001-12-14", json!("2001-12-14")),
            (
                "2001-12-14t21:59:43.10-05:00",
                json!("2001-12-14t21:59:43.10-05:00"),
            ),
            ("yes", json!(true)),
            ("Yes", json!(true)),
            ("YES", json!(true)),
            ("yES", json!("yES")),
            ("y", json!(true)),
            ("N", json!(false)),
            ("on", json!(true)),
            ("Off", json!(false)),
            ("TRUE", json!(true)),
            ("~", Value::Null),
            ("null", Value::Null),
            ("NULL", Value::Null),
            ("nULL", json!("nULL")),
            ("", Value::Null),
            ("'0755'", json!("0755")),
            ("\"yes\"", json!("yes")),
            ("!!int '0755'", json!(493)),
            ("!!float 2", json!(2)),
            ("!!str 0755", json!("0755")),
            ("!!bool yes", json!(true)),
            ("!!binary aGVsbG8=", json!("hello")),
            ("!custom 5", json!("5")),
            ("! 12", json!("12")),
            ("abc", json!("abc")),
            ("1.2.3", json!("1.2.3")),
            ("0x", json!("0x")),
            ("-x", json!("-x")),
            ("+", json!("+")),
        ];
        for (scalar, want) in cases {
            assert_eq!(&value(scalar), want, "v: {scalar}");
        }
    }

    #[test]
    fn block_scalars_are_strings() {
        assert_eq!(read("v: |\n  0755\n")["v"], json!("0755\n"));
        assert_eq!(read("v: >-\n  yes\n")["v"], json!("yes"));
    }

    #[test]
    fn keys_are_resolved_then_written_as_json_keys() {
        let v = read("0755: a\ny: b\nn: c\n1.5: d\n1e6: e\n0.00001: f\n~x: g\n");
        assert_eq!(
            v,
            json!({"493": "a", "true": "b", "false": "c", "1.5": "d", "1e+06": "e",
                   "1e-05": "f", "~x": "g"})
        );
        assert!(error("~: 1\n").contains("a mapping key must not be null"));
        assert!(error("18446744073709551615: 1\n").contains("beyond a 64-bit signed integer"));
        assert!(error("? [a]\n: 1\n").contains("a mapping key must be a scalar"));
    }

    #[test]
    fn float_keys_are_go_g_format_of_a_float32() {
        let cases = [
            (1.0, "1"),
            (1000.0, "1000"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.23456789012, "1.2345679"),
            (-2.5, "-2.5"),
            (1e300, ".inf"),
            (1e21, "1e+21"),
        ];
        for (f, want) in cases {
            assert_eq!(go_format_g32(f), want, "{f}");
        }
    }

    #[test]
    fn merges_follow_go_yaml_v2() {
        // (Not `y`: that key is `true`.)
        let v = read(
            "b: &b {a: 2, c: 3}\np: {a: 1, <<: *b}\nq: {<<: *b, a: 1}\nr: {<<: [{a: 5}, *b]}\n",
        );
        assert_eq!(v["p"], json!({"a": 2, "c": 3}));
        assert_eq!(v["q"], json!({"a": 1, "c": 3}));
        assert_eq!(v["r"], json!({"a": 5, "c": 3}));
        assert_eq!(read("x: {'<<': {a: 1}}\n")["x"], json!({"<<": {"a": 1}}));
        assert!(error("x: {<<: 5}\n").contains("needs a mapping"));
    }

    #[test]
    fn duplicates_last_wins_or_refused() {
        assert_eq!(read("a: 1\na: 2\n"), json!({"a": 2}));
        let e = first_document("a: 1\nb: 2\na: 3\n", DuplicateKeys::Refuse).err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("line 3 column 1: duplicate key `a` in a mapping")
        );
        // `y` and `true` are the same key once resolved.
        assert_eq!(read("y: 1\ntrue: 2\n"), json!({"true": 2}));
    }

    #[test]
    fn values_without_json_form_are_errors_naming_their_path() {
        assert_eq!(
            error("a:\n  b: [1, .nan]\n"),
            "a.b[1]: .nan cannot be represented in JSON"
        );
        assert_eq!(
            error("v: -.Inf\n"),
            "v: -.Inf cannot be represented in JSON"
        );
        assert_eq!(
            error("v: !!int abc\n"),
            "v: cannot decode !!str `abc` as a !!int"
        );
        assert_eq!(
            error("v: !!binary '*'\n"),
            "v: !!binary value contains invalid base64 data"
        );
    }

    #[test]
    fn anchors_aliases_and_documents() {
        assert_eq!(read("a: &x [1, yes]\nb: *x\n")["b"], json!([1, true]));
        assert!(error("a: *nope\n").contains("unknown anchor"));
        assert!(error("a: &x [*x]\n").contains("contains it"));
        assert_eq!(read(""), Value::Null);
        assert_eq!(read("# only a comment\n"), Value::Null);
        assert_eq!(read("---\na: 1\n---\nb: 2\n"), json!({"a": 1}));
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let e = first_document("a: 1\nb:\n  c: 2\n d: 3\n", DuplicateKeys::LastWins).err();
        let Some(Error::Syntax { line, .. }) = e else {
            panic!("{e:?}");
        };
        assert_eq!(line, 4);
    }

    #[test]
    fn nesting_is_bounded_and_the_bound_is_usable_on_a_small_stack() {
        // Block mappings: the parser bounds flow nesting itself.
        let deep = |n: usize| {
            (0..n)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect::<String>()
                + &" ".repeat(n)
                + "1\n"
        };
        // A 2 MiB stack, as tokio's worker threads have.
        let ok = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || first_document(&deep(MAX_DEPTH), DuplicateKeys::LastWins).map(|_| ()))
            .map(|t| t.join());
        assert!(matches!(ok, Ok(Ok(Ok(())))), "{ok:?}");
        assert!(
            error(&deep(MAX_DEPTH + 1)).contains("nested deeper than"),
            "too deep"
        );
    }

    #[test]
    fn a_billion_laughs_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        assert!(error(&text).contains("excessive aliasing"));
    }
}
