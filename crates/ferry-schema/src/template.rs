//! Value templates such as `'user#${id}'` and `'${_type}#${name:8:0}'`.

/// A parsed template: literal text and `${path[:width[:pad]]}` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var {
        path: String,
        width: usize,
        pad: String,
    },
}

/// The outcome of rendering a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rendered {
    /// Every variable resolved.
    Full(String),
    /// Some variable did not resolve: the text before the first unresolved one.
    Prefix(String),
}

impl Template {
    /// Parses template text; the error says what is malformed.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| {
                format!("unterminated variable in template '{text}': close it with '}}'")
            })?;
            parts.push(parse_var(&after[..end], text)?);
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template {
            text: text.to_string(),
            parts,
        })
    }

    /// The template's source text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The top-level property names the template reads (first segment of each path).
    pub(crate) fn inputs(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Var { path, .. } => path.split('.').next(),
            Part::Text(_) => None,
        })
    }

    /// Substitutes variables through `lookup` (given a dotted path, returns its text).
    pub(crate) fn render(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Rendered {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var { path, width, pad } => match lookup(path) {
                    Some(value) => out.push_str(&left_pad(value, *width, pad)),
                    None => return Rendered::Prefix(out),
                },
            }
        }
        Rendered::Full(out)
    }
}

fn parse_var(body: &str, text: &str) -> Result<Part, String> {
    let mut pieces = body.splitn(3, ':');
    let path = pieces.next().unwrap_or_default().trim().to_string();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(format!(
            "empty variable name in template '{text}': write ${{name}}"
        ));
    }
    let width = match pieces.next() {
        Some(width) => width.trim().parse().map_err(|_| {
            format!("bad width '{width}' in template '{text}': write ${{name:8}} or ${{name:8:0}}")
        })?,
        None => 0,
    };
    let pad = match pieces.next() {
        Some(pad) if !pad.is_empty() => pad.to_string(),
        _ => "0".to_string(),
    };
    Ok(Part::Var { path, width, pad })
}

/// Left-pads `value` to `width` characters; never truncates.
fn left_pad(value: String, width: usize, pad: &str) -> String {
    let missing = width.saturating_sub(value.chars().count());
    if missing == 0 {
        return value;
    }
    let padding: String = pad.chars().cycle().take(missing).collect();
    padding + &value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(template: &str, vars: &[(&str, &str)], want: Rendered) {
        let parsed = Template::parse(template).unwrap();
        let lookup = |path: &str| {
            vars.iter()
                .find(|(k, _)| *k == path)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(parsed.render(&lookup), want, "{template}");
    }

    #[test]
    fn renders() {
        use Rendered::{Full, Prefix};
        check("user#${id}", &[("id", "42")], Full("user#42".into()));
        check(
            "${_type}#${name:8:0}",
            &[("_type", "User"), ("name", "ab")],
            Full("User#000000ab".into()),
        );
        check("${n:4}", &[("n", "7")], Full("0007".into()));
        check("${n:3:x}", &[("n", "toolong")], Full("toolong".into()));
        check(
            "${a.b}-${c}",
            &[("a.b", "1"), ("c", "2")],
            Full("1-2".into()),
        );
        check(
            "${_type}#${id}#${x}",
            &[("_type", "User")],
            Prefix("User#".into()),
        );
        check("${id}", &[], Prefix(String::new()));
        check("plain", &[], Full("plain".into()));
    }

    #[test]
    fn inputs_are_top_level_names() {
        let parsed = Template::parse("${a.b}#${c:2}#${a.d}").unwrap();
        assert_eq!(parsed.inputs().collect::<Vec<_>>(), ["a", "c", "a"]);
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["user#${id", "${}", "${a:x}", "${a..b}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
