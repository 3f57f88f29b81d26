//! Email templates: the subject, plain-text and HTML parts of every mail the crm sends
//! (`follow-up`, `nurture-1` … `nurture-3`, `report`), per language, rendered with minijinja.
//!
//! # Files
//!
//! One template is a `(name, language)` pair with up to three files in one folder:
//!
//! | file                        | part                         |          |
//! |-----------------------------|------------------------------|----------|
//! | `{name}.{lang}.subject.txt` | the subject (one line)       | required |
//! | `{name}.{lang}.txt`         | the plain-text part          | required |
//! | `{name}.{lang}.html`        | the HTML part                | optional |
//!
//! `name` is lowercase ASCII letters, digits, `-` and `_` (`follow-up`); `lang` is a two- or
//! three-letter language code (`de`, `bs`, `sr`, `en`). Files are UTF-8 (a leading BOM is
//! dropped). Other files in the folder (`README.md`, dotfiles, sub-folders) are ignored; a
//! `.txt`/`.html` file whose name does not follow the pattern is an error.
//!
//! The shipped defaults live in `plugins/templates/` and are compiled into the binary, so a
//! fresh machine needs no files. [`Templates::load`] with a folder (from config) lays the
//! folder over the defaults: a `(name, language)` found in the folder replaces the default of
//! that pair as a whole (a folder that gives only a subject and a text drops the default's HTML
//! part), and new names or languages are added. Every template needs an `en` version, because
//! English is the fallback of every language.
//!
//! # Variables
//!
//! A template sees exactly these variables ([`Context`]); [`allowed_variables`] lists them:
//!
//! - `customer`: `name`, `first_name`, `company`, `email`, `phone`, `language`
//! - `call`: `summary`, `outcome`, `disposition`, `appointment` (`when`, `location`, `url`),
//!   `duration_seconds`, `agent`
//! - `sender`: `name`, `company`, `email`, `phone`
//! - `unsubscribe_url`
//! - `report`: `period`, `from`, `to`, `url`
//! - `vars`: free per-send values; any attribute is allowed
//!
//! plus minijinja's global functions (`range`, `dict`, `namespace`, …).
//!
//! # Checked when loaded
//!
//! Each file is compiled and checked when the templates are loaded, never first at send time.
//! These errors name the file and the line:
//!
//! - syntax errors, as minijinja reports them;
//! - unknown variables (`{{ custmer.name }}`), and unknown fields of the known objects
//!   (`{{ customer.frist_name }}`), found with minijinja's `undeclared_variables`;
//! - unknown filters, tests and functions, found by rendering every part once with sample
//!   data (only the branches that sample takes);
//! - a marketing template (`follow-up`, `nurture-*`) whose text or HTML part does not use
//!   `unsubscribe_url`.
//!
//! # Rendering
//!
//! Missing optional values are *undefined*: they print as nothing and are false in
//! `{% if call.appointment %}` (minijinja's `Chainable` behavior, so `call.appointment.when`
//! without a call is empty too). That is safe because the names themselves were checked at
//! load. A `none` value also prints as nothing. The HTML part is auto-escaped, the subject and
//! text parts are not. Blocks use `trim_blocks` and `lstrip_blocks`, so a `{% if %}` on its
//! own line leaves no blank line. The rendered subject is folded into one line.
//!
//! The language is chosen by its primary subtag (`de-AT` → `de`, `sr-Latn` → `sr`, which is
//! Cyrillic), falling back to `en`.

use minijinja::{
    AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value, syntax::SyntaxConfig,
    value::Serde,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
};

/// The mail sent after a call: thanks, the call's outcome, an appointment proposal.
pub const FOLLOW_UP: &str = "follow-up";
/// The steps of the nurture sequence for cold leads, in order.
pub const NURTURE_STEPS: &[&str] = &["nurture-1", "nurture-2", "nurture-3"];
/// The daily report mail.
pub const REPORT: &str = "report";
/// The language every other one falls back to; every template has it.
pub const FALLBACK_LANGUAGE: &str = "en";
/// The languages the shipped templates are written in.
pub const LANGUAGES: &[&str] = &["de", "bs", "sr", "en"];

/// Everything a template can use. Optional values left `None` are undefined in the template:
/// they print as nothing and are false in an `{% if %}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Context {
    /// The recipient.
    pub customer: CustomerVars,
    /// The call the mail is about (`follow-up`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<CallVars>,
    /// Who signs the mail.
    pub sender: SenderVars,
    /// The recipient's unsubscribe link; every marketing mail shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe_url: Option<String>,
    /// The report the mail points to (`report`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportVars>,
    /// Free values for one send (`{{ vars.coupon }}`), for templates added by an admin.
    pub vars: BTreeMap<String, serde_json::Value>,
}

/// `customer`: the recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CustomerVars {
    /// The full name (`Anna Müller`).
    pub name: String,
    /// The first name, when known (the English templates greet with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// The company.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// The address the mail goes to.
    pub email: String,
    /// The phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The customer's language tag (`de-AT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// `call`: the call a follow-up is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallVars {
    /// What was said, in a few sentences (line breaks are kept in the HTML part).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The business outcome (`appointment`, `interested`, `callback`, …); the shipped
    /// `follow-up` promises a call back for `callback`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// How the call ended (`answered`, `voicemail`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    /// The appointment proposed in the call, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appointment: Option<AppointmentVars>,
    /// Talk time in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u64>,
    /// The name of the (voice) agent who called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// `call.appointment`: a proposed appointment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppointmentVars {
    /// When, already written in the recipient's language and time zone; see
    /// [`AppointmentVars::at`].
    pub when: String,
    /// Where (an address, "Video call").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// A link to confirm or move the appointment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl AppointmentVars {
    /// An appointment at a local time, written for `language` with [`format_when`].
    pub fn at(starts_at: chrono::NaiveDateTime, language: &str) -> Self {
        Self {
            when: format_when(starts_at, language),
            location: None,
            url: None,
        }
    }
}

/// `sender`: who signs the mail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SenderVars {
    /// The name in the signature.
    pub name: String,
    /// The company.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// The reply address.
    pub email: String,
    /// The phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// `report`: the report a report mail points to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportVars {
    /// The period's name (`14.10.2025`, `KW 42`).
    pub period: String,
    /// Its start, as written for the reader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Its end, as written for the reader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// A link to the report; without one the templates say it is attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The language used (after fallback): `de` for a request of `de-AT`.
    pub language: String,
    /// The subject, one line.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part, when the template has one.
    pub html: Option<String>,
}

/// Why templates could not be loaded or rendered. `file` is the path of the template file
/// (`built-in follow-up.de.txt` for a shipped one), `line` its 1-based line when known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template folder or a file in it could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not a template file (bad name, not UTF-8) or a required part is missing.
    #[error("{file}: {reason}")]
    InvalidFile {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A template does not compile.
    #[error("{}: {message}", at(.file, *.line))]
    Syntax {
        /// The file.
        file: String,
        /// The line.
        line: Option<usize>,
        /// minijinja's message.
        message: String,
    },
    /// A template uses a variable (or a field) that is not in [`Context`].
    #[error("{}: unknown variable `{variable}`; {hint}", at(.file, *.line))]
    UnknownVariable {
        /// The file.
        file: String,
        /// The line of its first use.
        line: Option<usize>,
        /// The unknown name, with the path that leads to it (`customer.frist_name`).
        variable: String,
        /// What is allowed there.
        hint: String,
    },
    /// A marketing template's text or HTML part does not show `unsubscribe_url`.
    #[error("{file}: a marketing email must show `unsubscribe_url`")]
    MissingUnsubscribe {
        /// The file.
        file: String,
    },
    /// A template has no version in the fallback language.
    #[error(
        "template `{name}` has no `en` version ({name}.en.subject.txt, {name}.en.txt); \
         English is the fallback of every language"
    )]
    MissingFallback {
        /// The template.
        name: String,
    },
    /// No template has this name.
    #[error("unknown email template `{name}` (known: {known})")]
    UnknownTemplate {
        /// The name asked for.
        name: String,
        /// The names there are, comma-separated.
        known: String,
    },
    /// Rendering failed (at load, with sample data, or at send time).
    #[error("{}: {message}", at(.file, *.line))]
    Render {
        /// The file.
        file: String,
        /// The line.
        line: Option<usize>,
        /// minijinja's message.
        message: String,
    },
}

/// `file:line`, or `file` when the line is unknown.
fn at(file: &str, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{file}:{line}"),
        None => file.to_owned(),
    }
}

/// The loaded templates, compiled and checked: cheap to render from, shareable across tasks.
#[derive(Debug, Clone)]
pub struct Templates {
    env: Environment<'static>,
    /// name → language → the files of its parts.
    index: BTreeMap<String, BTreeMap<String, Files>>,
}

/// Where the parts of one `(name, language)` came from, for error messages.
#[derive(Debug, Clone)]
struct Files {
    subject: String,
    text: String,
    html: Option<String>,
}

/// The three parts of a template, with their file suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    /// The suffix after `{name}.{lang}.`, most specific first (for parsing file names).
    const ALL: [Part; 3] = [Part::Subject, Part::Html, Part::Text];

    fn suffix(self) -> &'static str {
        match self {
            Part::Subject => "subject.txt",
            Part::Text => "txt",
            Part::Html => "html",
        }
    }

    fn index(self) -> usize {
        match self {
            Part::Subject => 0,
            Part::Text => 1,
            Part::Html => 2,
        }
    }
}

/// One template file's text and where it came from.
#[derive(Debug, Clone)]
struct Source {
    label: String,
    text: String,
}

/// The files of one `(name, language)`, by [`Part::index`].
type PartSet = [Option<Source>; 3];

/// The shipped templates: `(file name, contents)`.
macro_rules! shipped {
    ($($name:literal: $($lang:literal)+;)+) => {
        &[$($(
            (
                concat!($name, ".", $lang, ".subject.txt"),
                include_str!(concat!("../templates/", $name, ".", $lang, ".subject.txt")),
            ),
            (
                concat!($name, ".", $lang, ".txt"),
                include_str!(concat!("../templates/", $name, ".", $lang, ".txt")),
            ),
            (
                concat!($name, ".", $lang, ".html"),
                include_str!(concat!("../templates/", $name, ".", $lang, ".html")),
            ),
        )+)+]
    };
}

const DEFAULTS: &[(&str, &str)] = shipped! {
    "follow-up": "de" "bs" "sr" "en";
    "nurture-1": "de" "bs" "sr" "en";
    "nurture-2": "de" "bs" "sr" "en";
    "nurture-3": "de" "bs" "sr" "en";
    "report": "de" "bs" "sr" "en";
};

impl Templates {
    /// The shipped templates, overridden and extended by the files in `dir` when given (see
    /// the module docs for the file names). Every file is compiled and checked here; the
    /// first problem is returned with its file and line.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut sets: BTreeMap<(String, String), PartSet> = BTreeMap::new();
        for (file, text) in DEFAULTS {
            let (name, lang, part) = parse_file_name(file).ok_or_else(|| bad_name(file))?;
            let source = Source {
                label: format!("built-in {file}"),
                text: (*text).to_owned(),
            };
            set_part(sets.entry((name, lang)).or_default(), part, source);
        }
        if let Some(dir) = dir {
            let overrides = read_dir(dir)?;
            tracing::info!(dir = %dir.display(), templates = overrides.len(), "Loaded email template files");
            for (key, set) in overrides {
                sets.insert(key, set);
            }
        }
        Self::compile(sets)
    }

    /// The template names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.index.keys().map(String::as_str).collect()
    }

    /// The languages `name` is written in, sorted; empty for an unknown name.
    pub fn languages(&self, name: &str) -> Vec<&str> {
        self.index
            .get(name)
            .map(|langs| langs.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Renders template `name` for `language` (a tag like `de-AT`: its primary subtag, else
    /// `en`).
    pub fn render(
        &self,
        name: &str,
        language: &str,
        context: &Context,
    ) -> Result<Rendered, TemplateError> {
        let unknown = || TemplateError::UnknownTemplate {
            name: name.to_owned(),
            known: self.names().join(", "),
        };
        let languages = self.index.get(name).ok_or_else(unknown)?;
        let wanted = primary_language(language);
        let (lang, files) = languages
            .get_key_value(wanted.as_str())
            .or_else(|| languages.get_key_value(FALLBACK_LANGUAGE))
            .ok_or_else(unknown)?;
        let value = Value::from(Serde(context));
        let subject = self.render_part(name, lang, Part::Subject, &files.subject, &value)?;
        let text = self.render_part(name, lang, Part::Text, &files.text, &value)?;
        let html = match &files.html {
            Some(file) => Some(self.render_part(name, lang, Part::Html, file, &value)?),
            None => None,
        };
        Ok(Rendered {
            language: lang.clone(),
            subject: single_line(&subject),
            text,
            html,
        })
    }

    fn render_part(
        &self,
        name: &str,
        lang: &str,
        part: Part,
        file: &str,
        value: &Value,
    ) -> Result<String, TemplateError> {
        let render_error = |e: minijinja::Error| TemplateError::Render {
            file: file.to_owned(),
            line: e.line(),
            message: message(&e),
        };
        self.env
            .get_template(&template_id(name, lang, part))
            .map_err(render_error)?
            .render(value)
            .map_err(render_error)
    }

    /// Compiles and checks every part.
    fn compile(sets: BTreeMap<(String, String), PartSet>) -> Result<Self, TemplateError> {
        let mut env = new_environment()?;
        let globals: HashSet<String> = env.globals().map(|(name, _)| name.to_owned()).collect();
        let sample = Value::from(Serde(sample_context()));
        let mut index: BTreeMap<String, BTreeMap<String, Files>> = BTreeMap::new();
        for ((name, lang), set) in sets {
            let [subject, text, html] = set;
            let missing = |part: Part| TemplateError::InvalidFile {
                file: format!("{name}.{lang}.{}", part.suffix()),
                reason: format!(
                    "missing; every template needs {name}.{lang}.subject.txt and {name}.{lang}.txt"
                ),
            };
            let subject = subject.ok_or_else(|| missing(Part::Subject))?;
            let text = text.ok_or_else(|| missing(Part::Text))?;
            for (part, source) in [
                (Part::Subject, Some(&subject)),
                (Part::Text, Some(&text)),
                (Part::Html, html.as_ref()),
            ] {
                let Some(source) = source else { continue };
                add_checked(&mut env, &globals, &sample, &name, &lang, part, source)?;
            }
            let files = Files {
                subject: subject.label,
                text: text.label,
                html: html.map(|h| h.label),
            };
            index.entry(name).or_default().insert(lang, files);
        }
        if let Some(name) = index
            .iter()
            .find(|(_, langs)| !langs.contains_key(FALLBACK_LANGUAGE))
            .map(|(name, _)| name.clone())
        {
            return Err(TemplateError::MissingFallback { name });
        }
        Ok(Self { env, index })
    }
}

/// The environment every template is compiled in (see the module docs for the choices).
fn new_environment() -> Result<Environment<'static>, TemplateError> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| TemplateError::Syntax {
            file: "template syntax configuration".to_owned(),
            line: None,
            message: message(&e),
        })?;
    env.set_syntax(syntax);
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|id| {
        if id.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            Ok(())
        } else if *state.auto_escape() == AutoEscape::Html
            && !value.is_safe()
            && !value.is_undefined()
        {
            // minijinja also escapes `/` (`https:&#x2f;&#x2f;…`): valid HTML, but link
            // rewriters of email providers (click tracking) may not decode it.
            out.write_str(&escape_html(&value.to_string()))
                .map_err(minijinja::Error::from)
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    Ok(env)
}

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Compiles one part into `env` and runs the load-time checks on it.
fn add_checked(
    env: &mut Environment<'static>,
    globals: &HashSet<String>,
    sample: &Value,
    name: &str,
    lang: &str,
    part: Part,
    source: &Source,
) -> Result<(), TemplateError> {
    let id = template_id(name, lang, part);
    let syntax_error = |e: minijinja::Error| TemplateError::Syntax {
        file: source.label.clone(),
        line: e.line(),
        message: message(&e),
    };
    env.add_template_owned(id.clone(), source.text.clone())
        .map_err(syntax_error)?;
    let template = env.get_template(&id).map_err(syntax_error)?;

    let used = template.undeclared_variables(true);
    check_variables(&used, globals, source)?;
    if part != Part::Subject
        && is_marketing(name)
        && !used
            .iter()
            .any(|path| path.split('.').next() == Some("unsubscribe_url"))
    {
        return Err(TemplateError::MissingUnsubscribe {
            file: source.label.clone(),
        });
    }

    // Unknown filters, tests and functions only show when rendered; other runtime errors
    // may be fine with real data (`vars` is empty in the sample), so only these are fatal.
    match template.render(sample) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnknownFilter
                    | ErrorKind::UnknownTest
                    | ErrorKind::UnknownFunction
                    | ErrorKind::UnknownMethod
                    | ErrorKind::TemplateNotFound
            ) =>
        {
            Err(TemplateError::Render {
                file: source.label.clone(),
                line: e.line(),
                message: message(&e),
            })
        }
        _ => Ok(()),
    }
}

/// minijinja's message without its own `(in name:line)` suffix.
fn message(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// The id of a part in the environment; the `.html` suffix turns on auto-escaping.
fn template_id(name: &str, lang: &str, part: Part) -> String {
    format!("{name}.{lang}.{}", part.suffix())
}

/// Whether `name` is a marketing mail, which must show an unsubscribe link.
fn is_marketing(name: &str) -> bool {
    name == FOLLOW_UP || name.starts_with("nurture-")
}

fn set_part(set: &mut PartSet, part: Part, source: Source) {
    if let Some(slot) = set.get_mut(part.index()) {
        *slot = Some(source);
    }
}

fn bad_name(file: &str) -> TemplateError {
    TemplateError::InvalidFile {
        file: file.to_owned(),
        reason: "not a template file name; expected {name}.{lang}.subject.txt, \
                 {name}.{lang}.txt or {name}.{lang}.html (name: a-z, 0-9, - and _; \
                 lang: two or three letters a-z)"
            .to_owned(),
    }
}

/// `follow-up.de.subject.txt` → (`follow-up`, `de`, subject).
fn parse_file_name(file: &str) -> Option<(String, String, Part)> {
    let (stem, part) = Part::ALL.iter().find_map(|part| {
        file.strip_suffix(part.suffix())
            .and_then(|rest| rest.strip_suffix('.'))
            .map(|stem| (stem, *part))
    })?;
    let (name, lang) = stem.rsplit_once('.')?;
    let name_ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let lang_ok = (2..=3).contains(&lang.len()) && lang.chars().all(|c| c.is_ascii_lowercase());
    (name_ok && lang_ok).then(|| (name.to_owned(), lang.to_owned(), part))
}

/// Reads the template files of `dir` (not its sub-folders), grouped by `(name, language)`.
fn read_dir(dir: &Path) -> Result<BTreeMap<(String, String), PartSet>, TemplateError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| TemplateError::Io { path, source }
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        paths.push(entry.map_err(io_error(dir))?.path());
    }
    paths.sort();

    let mut sets: BTreeMap<(String, String), PartSet> = BTreeMap::new();
    for path in paths {
        let label = path.display().to_string();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        if file.starts_with('.')
            || !(file.ends_with(".txt") || file.ends_with(".html"))
            || !path.is_file()
        {
            continue;
        }
        let (name, lang, part) = parse_file_name(file).ok_or_else(|| bad_name(&label))?;
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let text = String::from_utf8(bytes).map_err(|_| TemplateError::InvalidFile {
            file: label.clone(),
            reason: "not UTF-8".to_owned(),
        })?;
        let text = text
            .strip_prefix('\u{feff}')
            .map(str::to_owned)
            .unwrap_or(text);
        set_part(
            sets.entry((name, lang)).or_default(),
            part,
            Source { label, text },
        );
    }
    // Name the missing part by its path in the folder.
    for ((name, lang), set) in &sets {
        for part in [Part::Subject, Part::Text] {
            if set.get(part.index()).is_some_and(Option::is_none) {
                let file = dir.join(template_id(name, lang, part));
                return Err(TemplateError::InvalidFile {
                    file: file.display().to_string(),
                    reason: format!(
                        "missing; every template needs {name}.{lang}.subject.txt and {name}.{lang}.txt"
                    ),
                });
            }
        }
    }
    Ok(sets)
}

/// The primary language subtag, lowercase: `de-AT` → `de`, `sr_Latn` → `sr`.
fn primary_language(tag: &str) -> String {
    tag.trim()
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Folds a rendered subject into one line.
fn single_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A date and time as the templates' languages write it: `Dienstag, 14. Oktober 2025 um
/// 10:00 Uhr`, `utorak, 14. oktobra 2025. u 10:00`, `уторак, 14. октобра 2025. у 10:00`,
/// `Tuesday, 14 October 2025 at 10:00` (English for any other language).
pub fn format_when(at: chrono::NaiveDateTime, language: &str) -> String {
    use chrono::{Datelike, Timelike};
    const DE_DAYS: [&str; 7] = [
        "Montag",
        "Dienstag",
        "Mittwoch",
        "Donnerstag",
        "Freitag",
        "Samstag",
        "Sonntag",
    ];
    const DE_MONTHS: [&str; 12] = [
        "Januar",
        "Februar",
        "März",
        "April",
        "Mai",
        "Juni",
        "Juli",
        "August",
        "September",
        "Oktober",
        "November",
        "Dezember",
    ];
    const BS_DAYS: [&str; 7] = [
        "ponedjeljak",
        "utorak",
        "srijeda",
        "četvrtak",
        "petak",
        "subota",
        "nedjelja",
    ];
    // Genitive: "14. oktobra".
    const BS_MONTHS: [&str; 12] = [
        "januara",
        "februara",
        "marta",
        "aprila",
        "maja",
        "juna",
        "jula",
        "augusta",
        "septembra",
        "oktobra",
        "novembra",
        "decembra",
    ];
    const SR_DAYS: [&str; 7] = [
        "понедељак",
        "уторак",
        "среда",
        "четвртак",
        "петак",
        "субота",
        "недеља",
    ];
    const SR_MONTHS: [&str; 12] = [
        "јануара",
        "фебруара",
        "марта",
        "априла",
        "маја",
        "јуна",
        "јула",
        "августа",
        "септембра",
        "октобра",
        "новембра",
        "децембра",
    ];
    const EN_DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    const EN_MONTHS: [&str; 12] = [
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

    let weekday = at.weekday().num_days_from_monday() as usize;
    let month = at.month0() as usize;
    let (day, year) = (at.day(), at.year());
    let time = format!("{:02}:{:02}", at.hour(), at.minute());
    let pick = |days: [&'static str; 7], months: [&'static str; 12]| {
        (
            days.get(weekday).copied().unwrap_or_default(),
            months.get(month).copied().unwrap_or_default(),
        )
    };
    match primary_language(language).as_str() {
        "de" => {
            let (d, m) = pick(DE_DAYS, DE_MONTHS);
            format!("{d}, {day}. {m} {year} um {time} Uhr")
        }
        "bs" => {
            let (d, m) = pick(BS_DAYS, BS_MONTHS);
            format!("{d}, {day}. {m} {year}. u {time}")
        }
        "sr" => {
            let (d, m) = pick(SR_DAYS, SR_MONTHS);
            format!("{d}, {day}. {m} {year}. у {time}")
        }
        _ => {
            let (d, m) = pick(EN_DAYS, EN_MONTHS);
            format!("{d}, {day} {m} {year} at {time}")
        }
    }
}

/// The shape of what a template may look up.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A string or number: no fields.
    Value,
    /// An object with these fields.
    Object(&'static [(&'static str, Shape)]),
    /// Anything (`vars`).
    Any,
}

const APPOINTMENT_FIELDS: &[(&str, Shape)] = &[
    ("when", Shape::Value),
    ("location", Shape::Value),
    ("url", Shape::Value),
];
const CUSTOMER_FIELDS: &[(&str, Shape)] = &[
    ("name", Shape::Value),
    ("first_name", Shape::Value),
    ("company", Shape::Value),
    ("email", Shape::Value),
    ("phone", Shape::Value),
    ("language", Shape::Value),
];
const CALL_FIELDS: &[(&str, Shape)] = &[
    ("summary", Shape::Value),
    ("outcome", Shape::Value),
    ("disposition", Shape::Value),
    ("appointment", Shape::Object(APPOINTMENT_FIELDS)),
    ("duration_seconds", Shape::Value),
    ("agent", Shape::Value),
];
const SENDER_FIELDS: &[(&str, Shape)] = &[
    ("name", Shape::Value),
    ("company", Shape::Value),
    ("email", Shape::Value),
    ("phone", Shape::Value),
];
const REPORT_FIELDS: &[(&str, Shape)] = &[
    ("period", Shape::Value),
    ("from", Shape::Value),
    ("to", Shape::Value),
    ("url", Shape::Value),
];
/// The top-level variables: keep in step with [`Context`] (a test checks).
const VARIABLES: &[(&str, Shape)] = &[
    ("customer", Shape::Object(CUSTOMER_FIELDS)),
    ("call", Shape::Object(CALL_FIELDS)),
    ("sender", Shape::Object(SENDER_FIELDS)),
    ("unsubscribe_url", Shape::Value),
    ("report", Shape::Object(REPORT_FIELDS)),
    ("vars", Shape::Any),
];

/// Every variable path a template may use (`customer.name`, …, `vars.*`), for listings.
pub fn allowed_variables() -> Vec<String> {
    fn walk(prefix: &str, fields: &[(&str, Shape)], out: &mut Vec<String>) {
        for (name, shape) in fields {
            let path = if prefix.is_empty() {
                (*name).to_owned()
            } else {
                format!("{prefix}.{name}")
            };
            match shape {
                Shape::Value => out.push(path),
                Shape::Object(inner) => {
                    out.push(path.clone());
                    walk(&path, inner, out);
                }
                Shape::Any => out.push(format!("{path}.*")),
            }
        }
    }
    let mut out = Vec::new();
    walk("", VARIABLES, &mut out);
    out
}

/// Checks one dotted path from `undeclared_variables`; on error, the unknown prefix and a hint.
fn check_path(path: &str, globals: &HashSet<String>) -> Result<(), (String, String)> {
    let segments: Vec<&str> = path.split('.').collect();
    let mut fields = VARIABLES;
    for (i, segment) in segments.iter().enumerate() {
        let prefix = || segments[..=i].join(".");
        match fields.iter().find(|(name, _)| name == segment) {
            None if i == 0 && segments.len() == 1 && globals.contains(*segment) => return Ok(()),
            None => {
                let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
                let hint = if i == 0 {
                    format!("the variables are {}", names.join(", "))
                } else {
                    format!("`{}` has {}", segments[..i].join("."), names.join(", "))
                };
                return Err((prefix(), hint));
            }
            Some((_, Shape::Any)) => return Ok(()),
            Some((_, Shape::Value)) if i + 1 < segments.len() => {
                return Err((
                    segments[..=i + 1].join("."),
                    format!("`{}` has no fields", prefix()),
                ));
            }
            Some((_, Shape::Value)) => return Ok(()),
            Some((_, Shape::Object(inner))) => fields = inner,
        }
    }
    Ok(())
}

/// Rejects the first (by line) unknown variable of a template.
fn check_variables(
    used: &HashSet<String>,
    globals: &HashSet<String>,
    source: &Source,
) -> Result<(), TemplateError> {
    let mut unknown: Vec<(Option<usize>, String, String)> = used
        .iter()
        .filter_map(|path| check_path(path, globals).err())
        .map(|(variable, hint)| (find_line(&source.text, &variable), variable, hint))
        .collect();
    // Known lines first, then by line and name, so the error does not depend on hash order.
    unknown.sort_by(|a, b| (a.0.is_none(), a.0, &a.1).cmp(&(b.0.is_none(), b.0, &b.1)));
    match unknown.into_iter().next() {
        Some((line, variable, hint)) => Err(TemplateError::UnknownVariable {
            file: source.label.clone(),
            line,
            variable,
            hint,
        }),
        None => Ok(()),
    }
}

/// A token of the code inside `{{ }}` and `{% %}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    Dot,
    Other,
}

/// The line of the first use of the dotted `path` in a template's code, for error messages
/// (minijinja's `undeclared_variables` gives names, not places).
fn find_line(source: &str, path: &str) -> Option<usize> {
    let segments: Vec<&str> = path.split('.').collect();
    let first = *segments.first()?;
    let tokens = code_tokens(source);
    let offset = tokens.iter().enumerate().find_map(|(k, (offset, token))| {
        let starts = *token == Token::Ident(first)
            && (k == 0 || tokens.get(k - 1).map(|t| t.1) != Some(Token::Dot));
        let rest = segments.iter().skip(1).enumerate().all(|(j, segment)| {
            tokens.get(k + 1 + 2 * j).map(|t| t.1) == Some(Token::Dot)
                && tokens.get(k + 2 + 2 * j).map(|t| t.1) == Some(Token::Ident(segment))
        });
        (starts && rest).then_some(*offset)
    })?;
    Some(source.get(..offset)?.matches('\n').count() + 1)
}

/// The tokens of all code in a template, with byte offsets (comments and `{% raw %}` skipped).
fn code_tokens(source: &str) -> Vec<(usize, Token<'_>)> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let (Some(&open), Some(&kind)) = (bytes.get(i), bytes.get(i + 1)) {
        if open != b'{' {
            i += 1;
            continue;
        }
        match kind {
            b'#' => i = find_from(bytes, i + 2, b"#}").map_or(bytes.len(), |end| end + 2),
            b'{' | b'%' => {
                let close: &[u8] = if kind == b'{' { b"}}" } else { b"%}" };
                let body_start = i + 2;
                let (body_end, next) = scan_code(source, body_start, close, &mut out);
                out.push((body_end, Token::Other));
                i = next;
                let is_raw = kind == b'%'
                    && source.get(body_start..body_end).is_some_and(|body| {
                        body.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace())
                            == "raw"
                    });
                if is_raw {
                    i = find_from(bytes, i, b"endraw")
                        .and_then(|end| find_from(bytes, end, b"%}"))
                        .map_or(bytes.len(), |end| end + 2);
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Tokenizes code from `i` to the `close` delimiter; returns where the code ends and where
/// the text after the delimiter starts.
fn scan_code<'a>(
    source: &'a str,
    mut i: usize,
    close: &[u8],
    out: &mut Vec<(usize, Token<'a>)>,
) -> (usize, usize) {
    let bytes = source.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while let Some(&c) = bytes.get(i) {
        if bytes.get(i..).is_some_and(|rest| rest.starts_with(close)) {
            return (i, i + close.len());
        }
        let start = i;
        if c.is_ascii_alphabetic() || c == b'_' {
            while bytes.get(i).is_some_and(|&c| word(c)) {
                i += 1;
            }
            if let Some(ident) = source.get(start..i) {
                out.push((start, Token::Ident(ident)));
            }
        } else if c.is_ascii_digit() {
            while bytes.get(i).is_some_and(|&c| word(c)) {
                i += 1;
            }
            out.push((start, Token::Other));
        } else if c == b'.' {
            out.push((start, Token::Dot));
            i += 1;
        } else if c == b'"' || c == b'\'' {
            i += 1;
            while let Some(&s) = bytes.get(i) {
                i += if s == b'\\' { 2 } else { 1 };
                if s == c {
                    break;
                }
            }
            out.push((start, Token::Other));
        } else {
            if !c.is_ascii_whitespace() {
                out.push((start, Token::Other));
            }
            i += 1;
        }
    }
    (bytes.len(), bytes.len())
}

fn find_from(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|position| from + position)
}

/// Data every field of which is set, for the trial render at load.
fn sample_context() -> Context {
    Context {
        customer: CustomerVars {
            name: "Anna Müller".to_owned(),
            first_name: Some("Anna".to_owned()),
            company: Some("Müller GmbH".to_owned()),
            email: "anna@example.com".to_owned(),
            phone: Some("+49 30 1234567".to_owned()),
            language: Some("de".to_owned()),
        },
        call: Some(CallVars {
            summary: Some("Interested in a demo.".to_owned()),
            outcome: Some("appointment".to_owned()),
            disposition: Some("answered".to_owned()),
            appointment: Some(AppointmentVars {
                when: "Tuesday, 14 October 2025 at 10:00".to_owned(),
                location: Some("Video call".to_owned()),
                url: Some("https://example.com/appointment".to_owned()),
            }),
            duration_seconds: Some(180),
            agent: Some("Lena".to_owned()),
        }),
        sender: SenderVars {
            name: "Max Weber".to_owned(),
            company: Some("Beispiel AG".to_owned()),
            email: "max@example.com".to_owned(),
            phone: Some("+49 30 7654321".to_owned()),
        },
        unsubscribe_url: Some("https://example.com/unsubscribe".to_owned()),
        report: Some(ReportVars {
            period: "14.10.2025".to_owned(),
            from: Some("14.10.2025 00:00".to_owned()),
            to: Some("14.10.2025 23:59".to_owned()),
            url: Some("https://example.com/report".to_owned()),
        }),
        vars: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    const UNSUBSCRIBE: &str = "https://crm.example/u/abc123";

    /// A folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> std::io::Result<Self> {
            let path = std::env::temp_dir().join(format!("crm-templates-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir(&path)?;
            Ok(Self(path))
        }

        fn write(&self, file: &str, text: &str) -> std::io::Result<()> {
            std::fs::write(self.0.join(file), text)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn customer(lang: &str) -> CustomerVars {
        let (name, first_name, company) = match lang {
            "de" => ("Anna Müller", "Anna", "Müller Haustechnik GmbH"),
            "bs" => ("Amra Hodžić", "Amra", "Hodžić d.o.o."),
            "sr" => ("Милош Јовановић", "Милош", "Јовановић д.о.о."),
            _ => ("Emma Clark", "Emma", "Clark Ltd"),
        };
        CustomerVars {
            name: name.to_owned(),
            first_name: Some(first_name.to_owned()),
            company: Some(company.to_owned()),
            email: "kunde@example.com".to_owned(),
            phone: None,
            language: Some(lang.to_owned()),
        }
    }

    fn starts_at() -> chrono::NaiveDateTime {
        NaiveDate::from_ymd_opt(2025, 10, 14)
            .and_then(|d| d.and_hms_opt(10, 0, 0))
            .unwrap_or_default()
    }

    /// A follow-up context: a call with a summary and, when `appointment`, a proposal.
    fn context(lang: &str, appointment: bool) -> Context {
        Context {
            customer: customer(lang),
            call: Some(CallVars {
                summary: Some("Demo for the sales team.\nBudget approved.".to_owned()),
                outcome: Some(
                    if appointment {
                        "appointment"
                    } else {
                        "interested"
                    }
                    .to_owned(),
                ),
                disposition: Some("answered".to_owned()),
                appointment: appointment.then(|| AppointmentVars {
                    url: Some("https://crm.example/a/42".to_owned()),
                    ..AppointmentVars::at(starts_at(), lang)
                }),
                duration_seconds: Some(245),
                agent: Some("Lena".to_owned()),
            }),
            sender: SenderVars {
                name: "Jana Novak".to_owned(),
                company: Some("Nordlicht Vertrieb GmbH".to_owned()),
                email: "jana.novak@nordlicht.example".to_owned(),
                phone: Some("+49 30 1234567".to_owned()),
            },
            unsubscribe_url: Some(UNSUBSCRIBE.to_owned()),
            report: Some(ReportVars {
                period: "14.10.2025".to_owned(),
                from: None,
                to: None,
                url: Some("https://crm.example/reports/2025-10-14".to_owned()),
            }),
            vars: BTreeMap::new(),
        }
    }

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn defaults_load_with_every_template_in_every_language() -> anyhow::Result<()> {
        let templates = Templates::load(None)?;
        assert_eq!(
            templates.names(),
            ["follow-up", "nurture-1", "nurture-2", "nurture-3", "report"]
        );
        for name in templates.names() {
            assert_eq!(
                templates.languages(name),
                ["bs", "de", "en", "sr"],
                "{name}"
            );
        }
        assert!(templates.languages("nope").is_empty());
        Ok(())
    }

    /// (template, language, subject, lines the text part must contain).
    const EXPECTED: &[(&str, &str, &str, &[&str])] = &[
        (
            "follow-up",
            "de",
            "Terminvorschlag: Dienstag, 14. Oktober 2025 um 10:00 Uhr",
            &[
                "Guten Tag Anna Müller,",
                "vielen Dank, dass Sie sich die Zeit für ein Gespräch mit uns genommen haben.",
                "Wie besprochen schlagen wir Ihnen folgenden Termin vor:",
                "Dienstag, 14. Oktober 2025 um 10:00 Uhr",
                "Mit freundlichen Grüßen",
            ],
        ),
        (
            "follow-up",
            "bs",
            "Prijedlog termina: utorak, 14. oktobra 2025. u 10:00",
            &[
                "Poštovani/a Amra Hodžić,",
                "Hvala Vam što ste odvojili vrijeme za razgovor s nama.",
                "Kao što smo razgovarali, predlažemo sljedeći termin:",
                "utorak, 14. oktobra 2025. u 10:00",
                "Srdačan pozdrav",
            ],
        ),
        (
            "follow-up",
            "sr",
            "Предлог термина: уторак, 14. октобра 2025. у 10:00",
            &[
                "Поштовани/а Милош Јовановић,",
                "Хвала Вам што сте одвојили време за разговор са нама.",
                "Као што смо разговарали, предлажемо следећи термин:",
                "уторак, 14. октобра 2025. у 10:00",
                "Срдачан поздрав",
            ],
        ),
        (
            "follow-up",
            "en",
            "Appointment proposal: Tuesday, 14 October 2025 at 10:00",
            &[
                "Hello Emma,",
                "Thank you for taking the time to speak with us.",
                "As discussed, we would like to propose the following appointment:",
                "Tuesday, 14 October 2025 at 10:00",
                "Kind regards",
            ],
        ),
        (
            "nurture-1",
            "de",
            "Kurze Nachricht von Nordlicht Vertrieb GmbH",
            &[
                "Guten Tag Anna Müller,",
                "wir standen kürzlich in Kontakt und möchten uns noch einmal kurz und ganz \
                 unverbindlich bei Ihnen melden.",
            ],
        ),
        (
            "nurture-1",
            "bs",
            "Kratka poruka od Nordlicht Vertrieb GmbH",
            &[
                "Poštovani/a Amra Hodžić,",
                "Nedavno smo bili u kontaktu, pa Vam se želimo još jednom kratko javiti – bez \
                 ikakve obaveze.",
            ],
        ),
        (
            "nurture-1",
            "sr",
            "Кратка порука од Nordlicht Vertrieb GmbH",
            &[
                "Поштовани/а Милош Јовановић,",
                "Недавно смо били у контакту, па желимо да Вам се још једном кратко јавимо – без \
                 икакве обавезе.",
            ],
        ),
        (
            "nurture-1",
            "en",
            "A short note from Nordlicht Vertrieb GmbH",
            &[
                "Hello Emma,",
                "We were in touch recently, and we would like to follow up briefly – without any \
                 obligation.",
            ],
        ),
        (
            "nurture-2",
            "de",
            "Haben Sie noch Fragen?",
            &[
                "Guten Tag Anna Müller,",
                "Wenn Sie möchten, antworten Sie einfach mit einem Zeitpunkt, der Ihnen passt. Und \
                 falls bei Müller Haustechnik GmbH jemand anderes für dieses Thema zuständig ist, \
                 freuen wir uns über einen kurzen Hinweis.",
            ],
        ),
        (
            "nurture-2",
            "bs",
            "Imate li pitanja?",
            &[
                "Poštovani/a Amra Hodžić,",
                "Ako želite, jednostavno nam odgovorite s terminom koji Vam odgovara. A ako je za \
                 ovu temu u firmi Hodžić d.o.o. zadužen neko drugi, bit ćemo Vam zahvalni na \
                 kratkoj informaciji.",
            ],
        ),
        (
            "nurture-2",
            "sr",
            "Да ли имате питања?",
            &[
                "Поштовани/а Милош Јовановић,",
                "Ако желите, једноставно нам одговорите са термином који Вам одговара. А ако је за \
                 ову тему у фирми Јовановић д.о.о. задужен неко други, бићемо Вам захвални на \
                 краткој информацији.",
            ],
        ),
        (
            "nurture-2",
            "en",
            "Do you have any questions?",
            &[
                "Hello Emma,",
                "If you like, simply reply with a time that works for you. And if someone else at \
                 Clark Ltd is responsible for this topic, we would appreciate a short hint.",
            ],
        ),
        (
            "nurture-3",
            "de",
            "Sollen wir in Kontakt bleiben?",
            &[
                "Guten Tag Anna Müller,",
                "Vielen Dank für Ihre Zeit und alles Gute für Sie und das Team von Müller \
                 Haustechnik GmbH!",
            ],
        ),
        (
            "nurture-3",
            "bs",
            "Ostajemo li u kontaktu?",
            &[
                "Poštovani/a Amra Hodžić,",
                "Hvala Vam na vremenu i sve najbolje Vama i timu firme Hodžić d.o.o.!",
            ],
        ),
        (
            "nurture-3",
            "sr",
            "Да ли да останемо у контакту?",
            &[
                "Поштовани/а Милош Јовановић,",
                "Хвала Вам на времену и све најбоље Вама и тиму фирме Јовановић д.о.о.!",
            ],
        ),
        (
            "nurture-3",
            "en",
            "Shall we stay in touch?",
            &[
                "Hello Emma,",
                "Thank you for your time, and all the best to you and the team at Clark Ltd!",
            ],
        ),
        (
            "report",
            "de",
            "Tagesbericht: 14.10.2025",
            &[
                "Guten Tag,",
                "der Tagesbericht vom 14.10.2025 liegt für Sie bereit.",
                "Sie können ihn hier öffnen:",
                "https://crm.example/reports/2025-10-14",
            ],
        ),
        (
            "report",
            "bs",
            "Dnevni izvještaj: 14.10.2025",
            &[
                "Dobar dan,",
                "Dnevni izvještaj za 14.10.2025 je spreman.",
                "Možete ga otvoriti ovdje:",
                "https://crm.example/reports/2025-10-14",
            ],
        ),
        (
            "report",
            "sr",
            "Дневни извештај: 14.10.2025",
            &[
                "Добар дан,",
                "Дневни извештај за 14.10.2025 је спреман.",
                "Можете га отворити овде:",
                "https://crm.example/reports/2025-10-14",
            ],
        ),
        (
            "report",
            "en",
            "Daily report: 14.10.2025",
            &[
                "Hello,",
                "The daily report for 14.10.2025 is ready.",
                "You can open it here:",
                "https://crm.example/reports/2025-10-14",
            ],
        ),
    ];

    #[test]
    fn each_default_renders_in_each_language() -> anyhow::Result<()> {
        let templates = Templates::load(None)?;
        let mut seen = 0;
        for (name, lang, subject, lines) in EXPECTED {
            let rendered = templates.render(name, lang, &context(lang, true))?;
            assert_eq!(rendered.language, *lang);
            assert_eq!(rendered.subject, *subject, "{name}.{lang}");
            for line in *lines {
                assert!(
                    has_line(&rendered.text, line),
                    "{name}.{lang}: no line {line:?} in\n{}",
                    rendered.text
                );
            }
            let html = rendered.html.unwrap_or_default();
            let greeting = lines.first().copied().unwrap_or_default();
            assert!(
                html.contains(&format!("<p>{greeting}</p>")),
                "{name}.{lang}:\n{html}"
            );
            assert!(html.contains(&format!(
                "<html lang=\"{}\">",
                if *lang == "sr" { "sr-Cyrl" } else { lang }
            )));
            for part in [&rendered.text, &html] {
                assert!(
                    !part.contains("{{") && !part.contains("{%"),
                    "{name}.{lang}:\n{part}"
                );
            }
            if is_marketing(name) {
                assert!(has_line(&rendered.text, UNSUBSCRIBE), "{name}.{lang}");
                assert!(
                    html.contains(&format!("href=\"{UNSUBSCRIBE}\"")),
                    "{name}.{lang}"
                );
                assert!(
                    has_line(&rendered.text, "jana.novak@nordlicht.example"),
                    "{name}.{lang}"
                );
            } else {
                assert!(!rendered.text.contains(UNSUBSCRIBE), "{name}.{lang}");
            }
            seen += 1;
        }
        // Every shipped (template, language) is covered above.
        let all: usize = templates
            .names()
            .iter()
            .map(|n| templates.languages(n).len())
            .sum();
        assert_eq!(seen, all);
        Ok(())
    }

    #[test]
    fn follow_up_in_german_renders_exactly() -> anyhow::Result<()> {
        let templates = Templates::load(None)?;
        let rendered = templates.render(FOLLOW_UP, "de", &context("de", true))?;
        let expected = "\
Guten Tag Anna Müller,

vielen Dank, dass Sie sich die Zeit für ein Gespräch mit uns genommen haben.

Hier eine kurze Zusammenfassung unseres Gesprächs:
Demo for the sales team.
Budget approved.

Wie besprochen schlagen wir Ihnen folgenden Termin vor:
Dienstag, 14. Oktober 2025 um 10:00 Uhr

Hier können Sie den Termin bestätigen oder einen anderen Zeitpunkt wählen:
https://crm.example/a/42

Mit freundlichen Grüßen
Jana Novak
Nordlicht Vertrieb GmbH
Telefon: +49 30 1234567
jana.novak@nordlicht.example

--
Sie erhalten diese E-Mail, weil wir mit Ihnen telefoniert haben.
Wenn Sie keine E-Mails mehr von uns erhalten möchten, können Sie sich hier abmelden:
https://crm.example/u/abc123";
        assert_eq!(rendered.text, expected);
        Ok(())
    }

    #[test]
    fn report_without_link_says_attached() -> anyhow::Result<()> {
        let templates = Templates::load(None)?;
        let mut ctx = context("en", false);
        ctx.report = Some(ReportVars {
            period: "week 42".to_owned(),
            from: Some("13.10.2025".to_owned()),
            to: Some("19.10.2025".to_owned()),
            url: None,
        });
        let rendered = templates.render(REPORT, "en", &ctx)?;
        assert_eq!(
            rendered.text,
            "Hello,\n\nThe daily report for week 42 (13.10.2025 – 19.10.2025) is ready.\n\n\
             You will find it attached to this email.\n\nKind regards\nJana Novak"
        );
        Ok(())
    }

    #[test]
    fn language_falls_back_to_primary_subtag_then_english() -> anyhow::Result<()> {
        let templates = Templates::load(None)?;
        let ctx = context("de", false);
        for (asked, used, subject) in [
            ("de-AT", "de", "Vielen Dank für das Gespräch"),
            ("DE_ch", "de", "Vielen Dank für das Gespräch"),
            ("sr-Latn", "sr", "Хвала Вам на разговору"),
            ("bs", "bs", "Hvala Vam na razgovoru"),
            ("xx", "en", "Thank you for our conversation"),
            ("fr-FR", "en", "Thank you for our conversation"),
            ("", "en", "Thank you for our conversation"),
        ] {
            let rendered = templates.render(FOLLOW_UP, asked, &ctx)?;
            assert_eq!(
                (rendered.language.as_str(), rendered.subject.as_str()),
                (used, subject),
                "{asked}"
            );
        }
        Ok(())
    }

    #[test]
    fn unknown_template_is_a_clear_error() -> anyhow::Result<()> {
        let templates = Templates::load(None)?;
        let err = templates.render("follow_up", "de", &Context::default());
        let Err(err @ TemplateError::UnknownTemplate { .. }) = err else {
            panic!("expected UnknownTemplate, got {err:?}");
        };
        assert_eq!(
            err.to_string(),
            "unknown email template `follow_up` (known: follow-up, nurture-1, nurture-2, nurture-3, report)"
        );
        Ok(())
    }

    #[test]
    fn syntax_error_is_rejected_with_file_and_line() -> anyhow::Result<()> {
        let dir = TempDir::new()?;
        dir.write("follow-up.de.subject.txt", "Danke\n")?;
        dir.write(
            "follow-up.de.txt",
            "Guten Tag {{ customer.name }},\n\nvielen Dank {{ customer.name | }}.\n{{ unsubscribe_url }}\n",
        )?;
        let err = Templates::load(Some(&dir.0));
        let Err(err @ TemplateError::Syntax { .. }) = err else {
            panic!("expected a syntax error, got {err:?}");
        };
        let TemplateError::Syntax { file, line, .. } = &err else {
            unreachable!()
        };
        assert!(file.ends_with("follow-up.de.txt"), "{file}");
        assert_eq!(*line, Some(3));
        assert!(
            err.to_string().contains("follow-up.de.txt:3: syntax error"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn unknown_variables_are_rejected_with_file_and_line() -> anyhow::Result<()> {
        for (source, variable, line) in [
            (
                "Hallo,\n{{ custmer.name }}\n{{ unsubscribe_url }}",
                "custmer",
                2,
            ),
            (
                "{# customer.frist_name #}\nA\n{% if x %}{% endif %}\n{{ unsubscribe_url }}",
                "x",
                3,
            ),
            (
                "A\n{{ \"customer.frist_name\" }}\n{{ customer.frist_name|upper }}\n{{ unsubscribe_url }}",
                "customer.frist_name",
                3,
            ),
            (
                "{{ unsubscribe_url }}\n{% if call.appointment.when.day %}x{% endif %}",
                "call.appointment.when.day",
                2,
            ),
            (
                "{{ unsubscribe_url }}\n\n\n{{ sender.title }}",
                "sender.title",
                4,
            ),
        ] {
            let dir = TempDir::new()?;
            dir.write("nurture-1.de.subject.txt", "Hallo")?;
            dir.write("nurture-1.de.txt", source)?;
            let err = Templates::load(Some(&dir.0));
            let Err(TemplateError::UnknownVariable {
                file,
                line: at,
                variable: found,
                ..
            }) = &err
            else {
                panic!("expected UnknownVariable for {source:?}, got {err:?}");
            };
            assert!(file.ends_with("nurture-1.de.txt"), "{file}");
            assert_eq!((found.as_str(), *at), (variable, Some(line)), "{source:?}");
        }

        // In a subject too, and the message names file, line and what is allowed.
        let dir = TempDir::new()?;
        dir.write("report.en.subject.txt", "Report {{ reprot.period }}")?;
        dir.write("report.en.txt", "{{ report.url }}")?;
        let err = Templates::load(Some(&dir.0))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.ends_with(
                "report.en.subject.txt:1: unknown variable `reprot`; the variables are customer, \
                 call, sender, unsubscribe_url, report, vars"
            ),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn allowed_names_globals_and_vars_load() -> anyhow::Result<()> {
        let dir = TempDir::new()?;
        dir.write("welcome.en.subject.txt", "Welcome {{ vars.code }}")?;
        dir.write(
            "welcome.en.txt",
            "{% set ns = namespace(n=0) %}{% for i in range(2) %}{% set ns.n = ns.n + i %}{% endfor %}\
             {{ ns.n }} {{ vars.deep.path }} {{ vars.empty }}|{{ call.duration_seconds }}|\
             {{ customer.company or 'you' }}|{% raw %}{{ custmer }}{% endraw %}",
        )?;
        let templates = Templates::load(Some(&dir.0))?;
        let mut ctx = Context::default();
        ctx.vars.insert("code".to_owned(), serde_json::json!("ABC"));
        ctx.vars
            .insert("deep".to_owned(), serde_json::json!({"path": 7}));
        ctx.vars.insert("empty".to_owned(), serde_json::Value::Null);
        let rendered = templates.render("welcome", "de", &ctx)?;
        assert_eq!(rendered.subject, "Welcome ABC");
        assert_eq!(rendered.text, "1 7 ||you|{{ custmer }}");
        assert_eq!(rendered.html, None);
        Ok(())
    }

    #[test]
    fn unknown_filter_is_rejected_at_load() -> anyhow::Result<()> {
        let dir = TempDir::new()?;
        dir.write("report.de.subject.txt", "Bericht")?;
        dir.write("report.de.txt", "Hallo\n{{ report.period|shout }}")?;
        let err = Templates::load(Some(&dir.0));
        let Err(TemplateError::Render {
            file,
            line,
            message,
        }) = &err
        else {
            panic!("expected a render error, got {err:?}");
        };
        assert!(file.ends_with("report.de.txt"), "{file}");
        assert_eq!(*line, Some(2));
        assert!(message.contains("shout"), "{message}");
        Ok(())
    }

    #[test]
    fn marketing_templates_must_show_the_unsubscribe_link() -> anyhow::Result<()> {
        let dir = TempDir::new()?;
        dir.write("nurture-2.de.subject.txt", "Fragen?")?;
        dir.write(
            "nurture-2.de.txt",
            "Guten Tag {{ customer.name }}, {{ unsubscribe_url }}",
        )?;
        dir.write("nurture-2.de.html", "<p>Guten Tag {{ customer.name }}</p>")?;
        let err = Templates::load(Some(&dir.0));
        let Err(TemplateError::MissingUnsubscribe { file }) = &err else {
            panic!("expected MissingUnsubscribe, got {err:?}");
        };
        assert!(file.ends_with("nurture-2.de.html"), "{file}");
        Ok(())
    }

    #[test]
    fn a_folder_overrides_whole_templates_and_adds_new_ones() -> anyhow::Result<()> {
        let dir = TempDir::new()?;
        dir.write(
            "follow-up.de.subject.txt",
            "\u{feff}Danke,\n{{ customer.name }}!\n",
        )?;
        dir.write(
            "follow-up.de.txt",
            "Kurz: {{ call.summary }}\n{{ unsubscribe_url }}",
        )?;
        dir.write("welcome.de.subject.txt", "Willkommen")?;
        dir.write("welcome.de.txt", "Hallo")?;
        dir.write("welcome.en.subject.txt", "Welcome")?;
        dir.write("welcome.en.txt", "Hello")?;
        dir.write("welcome.en.html", "<p>Hello</p>")?;
        dir.write("README.md", "not a template")?;
        dir.write(".follow-up.de.txt.swp", "editor junk")?;
        std::fs::create_dir(dir.0.join("drafts"))?;

        let templates = Templates::load(Some(&dir.0))?;
        assert_eq!(
            templates.names(),
            [
                "follow-up",
                "nurture-1",
                "nurture-2",
                "nurture-3",
                "report",
                "welcome"
            ]
        );
        assert_eq!(templates.languages("welcome"), ["de", "en"]);

        let ctx = context("de", false);
        let de = templates.render(FOLLOW_UP, "de-DE", &ctx)?;
        assert_eq!(de.subject, "Danke, Anna Müller!");
        assert_eq!(
            de.text,
            format!("Kurz: Demo for the sales team.\nBudget approved.\n{UNSUBSCRIBE}")
        );
        assert_eq!(
            de.html, None,
            "the folder's set replaces the default's HTML part too"
        );
        let en = templates.render(FOLLOW_UP, "en", &ctx)?;
        assert!(en.html.is_some(), "other languages keep the defaults");
        assert_eq!(
            templates.render("welcome", "bs", &ctx)?.html.as_deref(),
            Some("<p>Hello</p>")
        );
        Ok(())
    }

    #[test]
    fn bad_folders_and_files_are_rejected() -> anyhow::Result<()> {
        let missing = std::env::temp_dir().join(format!("crm-templates-{}", uuid::Uuid::new_v4()));
        assert!(matches!(
            Templates::load(Some(&missing)),
            Err(TemplateError::Io { .. })
        ));

        let dir = TempDir::new()?;
        dir.write("follow-up.deutsch.txt", "x")?;
        let err = Templates::load(Some(&dir.0));
        let Err(TemplateError::InvalidFile { file, .. }) = &err else {
            panic!("expected InvalidFile, got {err:?}");
        };
        assert!(file.ends_with("follow-up.deutsch.txt"), "{file}");

        let dir = TempDir::new()?;
        dir.write("follow-up.de.txt", "{{ unsubscribe_url }}")?;
        let err = Templates::load(Some(&dir.0));
        let Err(TemplateError::InvalidFile { file, .. }) = &err else {
            panic!("expected InvalidFile, got {err:?}");
        };
        assert!(file.ends_with("follow-up.de.subject.txt"), "{file}");

        let dir = TempDir::new()?;
        std::fs::write(dir.0.join("report.de.txt"), [0xff, 0xfe, 0x00])?;
        dir.write("report.de.subject.txt", "x")?;
        assert!(matches!(
            Templates::load(Some(&dir.0)),
            Err(TemplateError::InvalidFile { .. })
        ));

        let dir = TempDir::new()?;
        dir.write("welcome.de.subject.txt", "Willkommen")?;
        dir.write("welcome.de.txt", "Hallo")?;
        let err = Templates::load(Some(&dir.0));
        assert!(
            matches!(&err, Err(TemplateError::MissingFallback { name }) if name == "welcome"),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn html_part_is_escaped_and_text_part_is_not() -> anyhow::Result<()> {
        let templates = Templates::load(None)?;
        let mut ctx = context("de", false);
        ctx.customer.name = "<script>alert(\"x\")</script> & 'Co'".to_owned();
        let rendered = templates.render(FOLLOW_UP, "de", &ctx)?;
        let html = rendered.html.unwrap_or_default();
        assert!(html.contains(
            "<p>Guten Tag &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;Co&#x27;,</p>"
        ), "{html}");
        assert!(!html.contains("<script>"));
        // URLs stay readable for link rewriters: `/` is not escaped.
        assert!(
            html.contains(&format!("<a href=\"{UNSUBSCRIBE}\"")),
            "{html}"
        );
        assert!(has_line(
            &rendered.text,
            "Guten Tag <script>alert(\"x\")</script> & 'Co',"
        ));
        Ok(())
    }

    #[test]
    fn serbian_renders_in_cyrillic() -> anyhow::Result<()> {
        let templates = Templates::load(None)?;
        let rendered = templates.render(FOLLOW_UP, "sr", &context("sr", false))?;
        assert_eq!(rendered.subject, "Хвала Вам на разговору");
        assert!(has_line(&rendered.text, "Поштовани/а Милош Јовановић,"));
        assert!(has_line(
            &rendered.text,
            "Ако у међувремену имате питања, једноставно одговорите на овај имејл – радо ћемо Вам помоћи."
        ));

        // The shipped Serbian copy has no Latin letters outside template code and HTML markup.
        for (file, text) in DEFAULTS.iter().filter(|(file, _)| file.contains(".sr.")) {
            let mut prose = String::new();
            let mut depth = 0;
            let chars: Vec<char> = text.chars().collect();
            let mut i = 0;
            while let Some(&c) = chars.get(i) {
                let next = chars.get(i + 1).copied();
                match (c, next) {
                    ('{', Some('{' | '%' | '#')) => depth += 1,
                    ('}' | '%' | '#', Some('}')) if depth > 0 => depth -= 1,
                    ('<', _) => depth += 1,
                    ('>', _) if depth > 0 => depth -= 1,
                    _ if depth == 0 => prose.push(c),
                    _ => {}
                }
                i += 1;
            }
            let latin: String = prose.chars().filter(|c| c.is_ascii_alphabetic()).collect();
            assert!(
                latin.is_empty(),
                "{file}: Latin letters {latin:?} in {prose:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn appointment_is_optional() -> anyhow::Result<()> {
        let templates = Templates::load(None)?;

        let mut with = context("en", true);
        if let Some(appointment) = with.call.as_mut().and_then(|c| c.appointment.as_mut()) {
            appointment.location = Some("Video call".to_owned());
        }
        let rendered = templates.render(FOLLOW_UP, "en", &with)?;
        assert_eq!(
            rendered.subject,
            "Appointment proposal: Tuesday, 14 October 2025 at 10:00"
        );
        assert!(has_line(
            &rendered.text,
            "Tuesday, 14 October 2025 at 10:00, Video call"
        ));
        assert!(has_line(&rendered.text, "https://crm.example/a/42"));
        let html = rendered.html.unwrap_or_default();
        assert!(
            html.contains("<strong>Tuesday, 14 October 2025 at 10:00</strong>, Video call"),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"https://crm.example/a/42\">"),
            "{html}"
        );

        // Without a link to confirm: ask for a reply.
        if let Some(appointment) = with.call.as_mut().and_then(|c| c.appointment.as_mut()) {
            appointment.url = None;
        }
        let rendered = templates.render(FOLLOW_UP, "en", &with)?;
        assert!(has_line(
            &rendered.text,
            "If this time does not suit you, simply reply to this email and we will find another one."
        ));

        // No appointment: thanks and the generic close, no trace of a proposal.
        let without = context("en", false);
        let rendered = templates.render(FOLLOW_UP, "en", &without)?;
        assert_eq!(rendered.subject, "Thank you for our conversation");
        assert!(!rendered.text.contains("appointment"), "{}", rendered.text);
        assert!(!rendered.html.unwrap_or_default().contains("<strong>"));
        assert!(has_line(
            &rendered.text,
            "If you have any questions in the meantime, simply reply to this email – we are happy to help."
        ));

        // A call back was agreed instead.
        let mut callback = context("de", false);
        if let Some(call) = callback.call.as_mut() {
            call.outcome = Some("callback".to_owned());
        }
        let rendered = templates.render(FOLLOW_UP, "de", &callback)?;
        assert!(has_line(
            &rendered.text,
            "Wie vereinbart melden wir uns telefonisch wieder bei Ihnen."
        ));

        // No call at all and a sparse sender: nothing breaks, nothing prints "none".
        let mut bare = context("bs", false);
        bare.call = None;
        bare.sender.company = None;
        bare.sender.phone = None;
        let rendered = templates.render(FOLLOW_UP, "bs", &bare)?;
        assert!(!rendered.text.contains("Kratak pregled"));
        assert!(!rendered.text.contains("none"));
        assert!(
            rendered
                .text
                .contains("Srdačan pozdrav\nJana Novak\njana.novak@nordlicht.example\n"),
            "{}",
            rendered.text
        );
        Ok(())
    }

    #[test]
    fn dates_are_written_per_language() {
        let at = starts_at();
        assert_eq!(
            format_when(at, "de-AT"),
            "Dienstag, 14. Oktober 2025 um 10:00 Uhr"
        );
        assert_eq!(format_when(at, "bs"), "utorak, 14. oktobra 2025. u 10:00");
        assert_eq!(format_when(at, "sr"), "уторак, 14. октобра 2025. у 10:00");
        assert_eq!(
            format_when(at, "en-GB"),
            "Tuesday, 14 October 2025 at 10:00"
        );
        assert_eq!(format_when(at, "hr"), "Tuesday, 14 October 2025 at 10:00");
    }

    #[test]
    fn the_variable_list_matches_the_context() -> anyhow::Result<()> {
        fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
            match value.as_object() {
                Some(_) if prefix == "vars" => out.push("vars.*".to_owned()),
                Some(fields) => {
                    if !prefix.is_empty() {
                        out.push(prefix.to_owned());
                    }
                    for (name, inner) in fields {
                        let path = if prefix.is_empty() {
                            name.clone()
                        } else {
                            format!("{prefix}.{name}")
                        };
                        walk(&path, inner, out);
                    }
                }
                None => out.push(prefix.to_owned()),
            }
        }
        let mut from_context = Vec::new();
        walk(
            "",
            &serde_json::to_value(sample_context())?,
            &mut from_context,
        );
        from_context.sort();
        let mut allowed = allowed_variables();
        allowed.sort();
        assert_eq!(from_context, allowed);

        // A partial context (a job payload) fills in the rest.
        let ctx: Context = serde_json::from_value(serde_json::json!({"customer": {"name": "A"}}))?;
        assert_eq!(ctx.customer.name, "A");
        assert_eq!(ctx.call, None);
        Ok(())
    }

    #[test]
    fn templates_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Templates>();
    }
}
