//! Chat templates rendered with minijinja set up like transformers' Jinja environment.

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value as JinjaValue};
use serde_json::Value;

use crate::error::ModelError;

/// Renders a Hugging Face chat template with `context` (a JSON object of template variables).
pub fn render_chat_template(template: &str, context: &Value) -> Result<String, ModelError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<JinjaValue, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_function(
        "strftime_now",
        |fmt: String| -> Result<String, JinjaError> { Ok(strftime_now(&fmt)) },
    );
    env.add_filter("tojson", tojson);
    let tmpl = env
        .template_from_str(template)
        .map_err(|e| ModelError::Template {
            msg: jinja_message(&e),
        })?;
    tmpl.render(context).map_err(|e| ModelError::Template {
        msg: jinja_message(&e),
    })
}

fn jinja_message(e: &JinjaError) -> String {
    let mut msg = match (e.kind(), e.detail()) {
        (ErrorKind::InvalidOperation, Some(d)) => d.to_string(),
        _ => e.to_string(),
    };
    if let Some(line) = e.line() {
        if !msg.contains("line") {
            msg.push_str(&format!(" (template line {line})"));
        }
    }
    msg
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(value: JinjaValue, kwargs: minijinja::value::Kwargs) -> Result<String, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("sort_keys").ok().flatten();
    kwargs.assert_all_used()?;
    let v = serde_json::to_value(&value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    py_json(&v, indent, 0, &mut out);
    Ok(out)
}

fn py_json(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                py_json(x, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        Value::Object(o) if !o.is_empty() => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                py_json(x, indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The current UTC time formatted with a subset of C `strftime` (`%Y %m %d %e %b %B %a %A %H %M
/// %S %y %j %%`); unknown directives are kept verbatim.
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_utc(secs, fmt)
}

fn format_utc(secs: i64, fmt: &str) -> String {
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
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let mname = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('b') => out.push_str(&mname[..3]),
            Some('B') => out.push_str(mname),
            Some('a') => out.push_str(&weekday[..3]),
            Some('A') => out.push_str(weekday),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strftime_known_dates() {
        // 2024-02-29 13:05:09 UTC is 1709211909.
        assert_eq!(
            format_utc(1_709_211_909, "%Y-%m-%d %H:%M:%S %j"),
            "2024-02-29 13:05:09 060"
        );
        assert_eq!(
            format_utc(1_709_211_909, "%d %b %Y, %A"),
            "29 Feb 2024, Thursday"
        );
        assert_eq!(format_utc(0, "%a %e %B %y %% %Q"), "Thu  1 January 70 % %Q");
    }

    #[test]
    fn template_is_python_jinja_like() {
        let t = "{% for m in messages %}\n  {{ m.role|upper }}: {{ m['content'].strip() }}\n{% endfor %}\
                 {% if add_generation_prompt %}{{ bos_token }}{% endif %}";
        let out = render_chat_template(
            t,
            &json!({"messages": [{"role": "user", "content": " hi "}], "add_generation_prompt": true, "bos_token": "<s>"}),
        )
        .unwrap();
        assert_eq!(out, "  USER: hi\n<s>");
        let e = render_chat_template("{{ raise_exception('roles must alternate') }}", &json!({}))
            .unwrap_err();
        assert!(
            matches!(&e, ModelError::Template { msg } if msg.contains("roles must alternate")),
            "{e}"
        );
        let e = render_chat_template("{% for %}", &json!({})).unwrap_err();
        assert!(matches!(e, ModelError::Template { .. }));
        let out = render_chat_template(
            "{{ x|tojson }}|{{ x|tojson(indent=2) }}",
            &json!({"x": {"a": [1, "é<"]}}),
        )
        .unwrap();
        assert_eq!(
            out,
            "{\"a\": [1, \"é<\"]}|{\n  \"a\": [\n    1,\n    \"é<\"\n  ]\n}"
        );
    }
}
