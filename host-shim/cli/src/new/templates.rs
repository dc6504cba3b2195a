//! The templates `weft new` makes services from: every folder under the
//! repository's `templates/`, embedded at build time (`build.rs`), what each
//! says of itself (its README's first line, for `--list`), and how one is
//! rendered: its placeholders replaced in paths and text.

use std::fmt::Write as _;
use std::path::{Component, Path};

/// One template folder.
pub struct Template {
    /// Its folder's name, which `weft new` takes.
    pub name: &'static str,
    /// Its files, by path relative to its folder (`/`-separated), sorted.
    pub files: &'static [TemplateFile],
}

/// One file of a template, as the source tree held it when `weft` was built.
pub struct TemplateFile {
    pub path: &'static str,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// The order `weft new --list` shows the templates in: one role per
/// language first, then services of several roles. A template missing here
/// is listed last (a test requires every one to be here).
const ORDER: &[&str] = &[
    "rust-web",
    "rust-web-p3",
    "rust-worker",
    "python-web",
    "python-worker",
    "js-web",
    "js-worker",
    "pipeline",
];

/// How a template's README starts: its first line is `# {{name}}: ` and
/// what the template makes, which `--list` shows.
const README_START: &str = "# {{name}}: ";

/// The values of a template's placeholders.
pub struct Placeholders {
    /// `{{name}}`: the service's name.
    pub name: String,
    /// `{{crate}}`: the name with `-` as `_`, as Rust names its outputs.
    pub crate_name: String,
    /// `{{weft}}`: Weft's source root, absolute, no trailing slash.
    pub weft: String,
}

impl Placeholders {
    /// The values for the service `name`, built against the Weft at `weft`.
    pub fn new(name: &str, weft: &str) -> Self {
        Placeholders {
            name: name.to_owned(),
            crate_name: name.replace('-', "_"),
            weft: weft.to_owned(),
        }
    }

    /// `text` with every placeholder replaced; anything else in braces is
    /// left alone (a template's own code may use `{{`).
    pub fn substitute(&self, text: &str) -> String {
        self.substitute_path(text).replace("{{weft}}", &self.weft)
    }

    /// `path` with `{{name}}` and `{{crate}}` replaced.
    fn substitute_path(&self, path: &str) -> String {
        path.replace("{{name}}", &self.name)
            .replace("{{crate}}", &self.crate_name)
    }
}

/// The language a template's roles are written in, told by its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    /// It has a `Cargo.toml` (anywhere): cargo builds it, and names its
    /// packages after the service.
    Rust,
    /// It has a `.py` file: componentize-py builds it.
    Python,
    /// It has a `.js` file: the JavaScript SDK's `build.mjs` builds it.
    JavaScript,
}

impl Language {
    /// The file under Weft's source root that shows this language's SDK is
    /// there, which the template's build reads.
    pub fn sdk_file(self) -> &'static str {
        match self {
            Language::Rust => "sdk/rust/Cargo.toml",
            Language::Python => "sdk/python/weft/__init__.py",
            Language::JavaScript => "sdk/js/build.mjs",
        }
    }
}

impl Template {
    fn find_embedded(name: &str) -> Option<&'static Template> {
        EMBEDDED.iter().find(|t| t.name == name)
    }

    /// The embedded template called `name`, or a line naming the valid ones.
    pub fn find(name: &str) -> Result<&'static Template, String> {
        Self::find_embedded(name).ok_or_else(|| {
            let valid: Vec<&str> = in_order().iter().map(|t| t.name).collect();
            format!("no template '{name}': choose one of {}", valid.join(", "))
        })
    }

    /// The language its roles are written in, if it is one `weft new` knows.
    pub fn language(&self) -> Option<Language> {
        let has =
            |wanted: &dyn Fn(&Path) -> bool| self.files.iter().any(|f| wanted(Path::new(f.path)));
        if has(&|p| p.file_name().is_some_and(|n| n == "Cargo.toml")) {
            Some(Language::Rust)
        } else if has(&|p| p.extension().is_some_and(|e| e == "py")) {
            Some(Language::Python)
        } else if has(&|p| p.extension().is_some_and(|e| e == "js")) {
            Some(Language::JavaScript)
        } else {
            None
        }
    }

    /// Its files, rendered: paths and UTF-8 text substituted, other bytes
    /// as they are. Refused if a rendered path would leave the new folder
    /// (anything but plain names in it).
    pub fn render(&self, values: &Placeholders) -> Result<Vec<(String, Vec<u8>)>, String> {
        self.files
            .iter()
            .map(|f| {
                let path = values.substitute_path(f.path);
                let mut parts = Path::new(&path).components().peekable();
                if parts.peek().is_none() || !parts.all(|c| matches!(c, Component::Normal(_))) {
                    return Err(format!(
                        "template {}: the path {} renders to {path:?}, which is not a plain relative path",
                        self.name, f.path
                    ));
                }
                let bytes = match std::str::from_utf8(f.bytes) {
                    Ok(text) => values.substitute(text).into_bytes(),
                    Err(_) => f.bytes.to_vec(),
                };
                Ok((path, bytes))
            })
            .collect()
    }

    fn readme(&self) -> &'static str {
        self.files
            .iter()
            .find(|f| f.path == "README.md")
            .and_then(|f| std::str::from_utf8(f.bytes).ok())
            .unwrap_or("")
    }

    /// What it makes: its README's first line after `# {{name}}: `.
    pub fn description(&self) -> &'static str {
        let first = self.readme().lines().next().unwrap_or("");
        first.strip_prefix(README_START).unwrap_or(first)
    }

    /// Its README's line saying what building it needs (the line that
    /// starts with `Needs`), if it has one.
    pub fn needs(&self, values: &Placeholders) -> Option<String> {
        self.readme()
            .lines()
            .find(|line| line.starts_with("Needs"))
            .map(|line| values.substitute(line.trim_end()))
    }
}

/// The embedded templates in [`ORDER`].
fn in_order() -> Vec<&'static Template> {
    let mut templates: Vec<&'static Template> = EMBEDDED.iter().collect();
    templates.sort_by_key(|t| {
        ORDER
            .iter()
            .position(|name| *name == t.name)
            .unwrap_or(usize::MAX)
    });
    templates
}

/// `weft new --list`: each embedded template and what it makes, a line each.
pub fn listing() -> String {
    let width = EMBEDDED.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for template in in_order() {
        writeln!(out, "{:width$}  {}", template.name, template.description())
            .expect("writing to a String");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The placeholders [`Placeholders::substitute`] replaces in text;
    /// paths take only the first two (a path holding Weft's root would not
    /// stay inside the new folder).
    const PLACEHOLDERS: [&str; 3] = ["{{name}}", "{{crate}}", "{{weft}}"];

    fn values() -> Placeholders {
        Placeholders::new("my-svc", "/opt/weft")
    }

    #[test]
    fn substitution_replaces_the_three_placeholders_and_nothing_else() {
        let text = "{{name}} {{crate}} {{weft}}/sdk {{ name }} {{other}} {{name}}";
        assert_eq!(
            values().substitute(text),
            "my-svc my_svc /opt/weft/sdk {{ name }} {{other}} my-svc"
        );
    }

    #[test]
    fn rendering_substitutes_paths_and_text_and_keeps_other_bytes() {
        static FILES: [TemplateFile; 2] = [
            TemplateFile {
                path: "src/{{crate}}.txt",
                bytes: b"hi {{name}}",
            },
            TemplateFile {
                path: "blob",
                bytes: &[0xff, b'{', b'{', 0xfe],
            },
        ];
        let template = Template {
            name: "t",
            files: &FILES,
        };
        let rendered = template.render(&values()).unwrap();
        assert_eq!(
            rendered[0],
            ("src/my_svc.txt".to_owned(), b"hi my-svc".to_vec())
        );
        assert_eq!(
            rendered[1],
            ("blob".to_owned(), vec![0xff, b'{', b'{', 0xfe])
        );
    }

    /// A path must stay a plain relative path once rendered: `..`, `/`,
    /// `.` or an empty path are refused.
    #[test]
    fn a_rendered_path_that_would_leave_the_folder_is_refused() {
        static CASES: [TemplateFile; 5] = [
            TemplateFile {
                path: "../x",
                bytes: b"",
            },
            TemplateFile {
                path: "/etc/x",
                bytes: b"",
            },
            TemplateFile {
                path: "a/../../x",
                bytes: b"",
            },
            TemplateFile {
                path: "./x",
                bytes: b"",
            },
            TemplateFile {
                path: "",
                bytes: b"",
            },
        ];
        for files in CASES.chunks(1) {
            let template = Template { name: "t", files };
            let refused = template.render(&values()).unwrap_err();
            assert!(refused.contains("not a plain relative path"), "{refused}");
        }
    }

    /// A template is Rust if it has a Cargo.toml anywhere, whatever
    /// placeholder its packages use.
    #[test]
    fn each_template_is_of_the_language_its_files_say() {
        let language = |name| Template::find(name).unwrap().language();
        assert_eq!(language("rust-web"), Some(Language::Rust));
        assert_eq!(language("rust-worker"), Some(Language::Rust));
        assert_eq!(language("pipeline"), Some(Language::Rust));
        assert_eq!(language("python-web"), Some(Language::Python));
        assert_eq!(language("python-worker"), Some(Language::Python));
        assert_eq!(language("js-web"), Some(Language::JavaScript));
        assert_eq!(language("js-worker"), Some(Language::JavaScript));
        for template in EMBEDDED {
            assert!(template.language().is_some(), "{}", template.name);
        }
    }

    /// `--list` shows every embedded template once, in [`ORDER`], with its
    /// README's description; [`ORDER`] names exactly the embedded ones.
    #[test]
    fn the_listing_shows_every_template_with_its_readmes_description() {
        let mut ordered: Vec<&str> = ORDER.to_vec();
        let mut embedded: Vec<&str> = EMBEDDED.iter().map(|t| t.name).collect();
        ordered.sort_unstable();
        embedded.sort_unstable();
        assert_eq!(ordered, embedded, "ORDER must name every template");

        let listing = listing();
        let names: Vec<&str> = listing
            .lines()
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(names, ORDER);
        let web = listing.lines().next().unwrap();
        assert!(
            web.ends_with("a Weft web role in Rust (`src/lib.rs`); `GET /` answers the `greeting` setting, `POST /echo` echoes."),
            "{web}"
        );
        for template in EMBEDDED {
            assert!(!template.description().is_empty(), "{}", template.name);
            assert!(
                !template.description().starts_with('#'),
                "{}",
                template.name
            );
        }
    }

    /// Every template's README is the five lines `weft new` and a reader
    /// rely on: what it is (which `--list` shows), what its build needs
    /// (which `weft new` prints), how to run it, a try, where to read more.
    #[test]
    fn every_readme_is_five_lines_what_needs_run_try_more() {
        let starts = [README_START, "Needs: ", "Run: ", "Try: ", "More: "];
        let mut wrong = Vec::new();
        for template in EMBEDDED {
            let lines: Vec<&str> = template.readme().lines().collect();
            let fits = lines.len() == starts.len()
                && lines
                    .iter()
                    .zip(starts)
                    .all(|(line, start)| line.starts_with(start) && line.len() > start.len());
            if !fits {
                wrong.push(format!("{}:\n{}", template.name, template.readme()));
            }
        }
        assert!(
            wrong.is_empty(),
            "README.md not five lines starting {starts:?}:\n{}",
            wrong.join("\n")
        );
    }

    /// `{{word}}`-shaped text in `text` (spaces inside allowed): what a
    /// placeholder, or a misspelt one, looks like. A Rust format string's
    /// `{{"id"...}}` is not one.
    fn placeholder_like(text: &str) -> Vec<&str> {
        let mut found = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("{{") {
            rest = &rest[at..];
            let Some(end) = rest[2..].find("}}") else {
                break;
            };
            let inner = rest[2..2 + end].trim();
            let word = !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if word {
                found.push(&rest[..end + 4]);
                rest = &rest[end + 4..];
            } else {
                rest = &rest[2..];
            }
        }
        found
    }

    #[test]
    fn placeholder_like_text_is_found() {
        let text = r#"{{name}} {{nmae}} {{ weft }} format!(r"{{"id":1}}") {{}} {{a}"#;
        assert_eq!(
            placeholder_like(text),
            ["{{name}}", "{{nmae}}", "{{ weft }}"]
        );
    }

    /// Every `{{word}}` in every embedded template's text and paths is a
    /// placeholder `weft new` replaces (in paths: `{{name}}` or `{{crate}}`),
    /// so a misspelt `{{nmae}}` fails here rather than in a user's build.
    #[test]
    fn every_template_uses_only_the_real_placeholders() {
        let in_paths = &PLACEHOLDERS[..2];
        for template in EMBEDDED {
            for file in template.files {
                for found in placeholder_like(file.path) {
                    assert!(
                        in_paths.contains(&found),
                        "{}/{}: {found} in the path",
                        template.name,
                        file.path
                    );
                }
                let text = String::from_utf8_lossy(file.bytes);
                for found in placeholder_like(&text) {
                    assert!(
                        PLACEHOLDERS.contains(&found),
                        "{}/{}: {found}",
                        template.name,
                        file.path
                    );
                }
            }
        }
    }

    #[test]
    fn every_template_has_a_manifest_and_a_readme() {
        assert!(!EMBEDDED.is_empty());
        for template in EMBEDDED {
            for file in ["weft.toml", "README.md"] {
                assert!(
                    template.files.iter().any(|f| f.path == file),
                    "{} has no {file}",
                    template.name
                );
            }
        }
    }

    #[test]
    fn an_unknown_template_is_refused_with_the_valid_ones() {
        let refused = Template::find("cobol-web").err().unwrap();
        assert!(refused.starts_with("no template 'cobol-web': choose one of rust-web, "));
        for template in EMBEDDED {
            assert!(refused.contains(template.name), "{refused}");
        }
        assert!(!refused.contains('\n'));
    }
}
