//! Loading user catalogues: errors (with origin, line, signature, field),
//! merging, and the example config.

use std::path::Path;

use failure_signatures::{Catalogue, CatalogueError, ClassifyContext, FailureClass};
use jiff::Timestamp;
use jiff::tz::TimeZone;

fn ctx() -> ClassifyContext {
    ClassifyContext::new(
        Timestamp::from_second(1_783_252_800).expect("valid"),
        TimeZone::UTC,
    )
}

fn err(yaml: &str) -> CatalogueError {
    match Catalogue::from_yaml_str(yaml, "user.yaml") {
        Ok(c) => panic!("expected an error, loaded {} signatures", c.len()),
        Err(e) => e,
    }
}

#[test]
fn valid_user_catalogue() {
    let yaml = r"
# comment
signatures:
  - name: acme-throttled
    class: rate_limit
    provider: acme
    priority: 50
    description: ACME's throttle message.
    pattern: 'ACME: throttled'

  - name: acme-key-revoked
    class: auth_invalid
    transient: true
    pattern: 'ACME key revoked'
";
    let cat = Catalogue::from_yaml_str(yaml, "user.yaml").expect("valid");
    assert_eq!(cat.len(), 2);
    assert!(!cat.is_empty());
    assert_eq!(
        cat.names().collect::<Vec<_>>(),
        ["acme-throttled", "acme-key-revoked"]
    );
    let sig = cat.get("acme-throttled").expect("present");
    assert_eq!(sig.class(), FailureClass::RateLimit);
    assert_eq!(sig.provider(), Some("acme"));
    assert_eq!(sig.priority(), 50);
    assert!(sig.transient(), "default from class");
    assert_eq!(sig.description(), Some("ACME's throttle message."));
    let sig = cat.get("acme-key-revoked").expect("present");
    assert!(sig.transient(), "explicit override");
    assert_eq!(sig.priority(), 0);
    assert_eq!(sig.provider(), None);

    let c = cat
        .classify("x\nERROR ACME: throttled\n", &ctx())
        .expect("classified");
    assert_eq!(c.signature, "acme-throttled");
    assert_eq!(c.provider.as_deref(), Some("acme"));
    assert_eq!(c.matched_line, "ERROR ACME: throttled");
}

#[test]
fn empty_documents_are_empty_catalogues() {
    for yaml in ["", "# nothing here\n", "signatures:\n", "signatures: []\n"] {
        let cat = Catalogue::from_yaml_str(yaml, "user.yaml").expect("valid");
        assert!(cat.is_empty(), "{yaml:?}");
        assert_eq!(cat.len(), 0);
        assert_eq!(cat.classify("HTTP 429", &ctx()), None);
    }
    assert!(Catalogue::default().is_empty());
}

#[test]
fn bad_regex_names_origin_line_signature_and_field() {
    let yaml = "signatures:\n  - name: good\n    class: rate_limit\n    pattern: 'ok'\n  - name: broken\n    class: quota\n    pattern: 'unclosed (group'\n";
    let e = err(yaml);
    assert!(matches!(e, CatalogueError::InvalidPattern { .. }), "{e:?}");
    assert_eq!(e.origin(), "user.yaml");
    assert_eq!(e.line(), Some(7));
    assert_eq!(e.signature(), Some("broken"));
    let msg = e.to_string();
    assert!(
        msg.starts_with("user.yaml:7: signature broken: field `pattern`: invalid regex"),
        "{msg}"
    );
}

#[test]
fn unknown_class() {
    let yaml = "signatures:\n  - name: a\n    class: rate_limited\n    pattern: 'x'\n";
    let e = err(yaml);
    assert!(
        matches!(e, CatalogueError::UnknownClass { ref class, .. } if class == "rate_limited"),
        "{e:?}"
    );
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.signature(), Some("a"));
    let msg = e.to_string();
    assert!(
        msg.contains("user.yaml:3: signature a: field `class`: unknown class `rate_limited`"),
        "{msg}"
    );
    assert!(msg.contains("rate_limit, quota"), "{msg}");
}

#[test]
fn duplicate_name() {
    let yaml = "signatures:\n  - name: a\n    class: quota\n    pattern: 'x'\n  - name: b\n    class: quota\n    pattern: 'y'\n  - name: a\n    class: quota\n    pattern: 'z'\n";
    let e = err(yaml);
    assert!(
        matches!(
            e,
            CatalogueError::DuplicateName {
                first_line: Some(2),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.line(), Some(8));
    assert_eq!(
        e.to_string(),
        "user.yaml:8: signature a: field `name`: duplicate name (first defined at line 2)"
    );
}

#[test]
fn missing_fields() {
    let e = err("signatures:\n  - name: a\n    class: quota\n");
    assert!(
        matches!(
            e,
            CatalogueError::MissingField {
                field: "pattern",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.line(), Some(2));
    assert_eq!(e.signature(), Some("a"));
    assert_eq!(
        e.to_string(),
        "user.yaml:2: signature a: missing required field `pattern`"
    );

    let e = err("signatures:\n  - name: a\n    pattern: x\n");
    assert!(
        matches!(e, CatalogueError::MissingField { field: "class", .. }),
        "{e:?}"
    );

    // Without a name the signature is identified by position.
    let e = err(
        "signatures:\n  - name: a\n    class: quota\n    pattern: x\n  - class: quota\n    pattern: y\n",
    );
    assert!(
        matches!(e, CatalogueError::MissingField { field: "name", .. }),
        "{e:?}"
    );
    assert_eq!(e.signature(), Some("#2"));
    assert_eq!(e.line(), Some(5));
}

#[test]
fn invalid_field_values() {
    let e = err("signatures:\n  - name: '  '\n    class: quota\n    pattern: x\n");
    assert!(
        matches!(e, CatalogueError::InvalidField { field: "name", .. }),
        "{e:?}"
    );
    let e = err("signatures:\n  - name: a\n    class: quota\n    pattern: ''\n");
    assert!(
        matches!(
            e,
            CatalogueError::InvalidField {
                field: "pattern",
                ..
            }
        ),
        "{e:?}"
    );
    // A pattern matching empty text would match every line.
    let e = err("signatures:\n  - name: a\n    class: quota\n    pattern: 'x*'\n");
    assert!(
        matches!(
            e,
            CatalogueError::InvalidField {
                field: "pattern",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.line(), Some(4));
    assert!(e.to_string().contains("matches empty text"));
}

#[test]
fn yaml_shape_errors_have_a_line() {
    // Wrong type.
    let e = err("signatures:\n  - name: a\n    class: quota\n    priority: high\n    pattern: x\n");
    assert!(matches!(e, CatalogueError::Yaml { .. }), "{e:?}");
    assert_eq!(e.line(), Some(4));
    assert!(
        e.to_string()
            .starts_with("user.yaml:4: invalid signature catalogue:"),
        "{e}"
    );
    assert!(e.to_string().contains("priority"), "{e}");
    // Unknown (misspelt) field.
    let e = err("signatures:\n  - name: a\n    class: quota\n    patern: x\n");
    assert!(matches!(e, CatalogueError::Yaml { .. }), "{e:?}");
    assert!(e.to_string().contains("patern"), "{e}");
    assert_eq!(e.line(), Some(4));
    // Syntax error.
    let e = err("signatures:\n  - name: [unclosed\n");
    assert!(matches!(e, CatalogueError::Yaml { .. }), "{e:?}");
    assert!(e.line().is_some());
    // Not a list.
    let e = err("signatures: 5\n");
    assert!(matches!(e, CatalogueError::Yaml { .. }), "{e:?}");
    // Unknown top-level key.
    let e = err("signature:\n  - name: a\n");
    assert!(matches!(e, CatalogueError::Yaml { .. }), "{e:?}");
}

#[test]
fn flow_style_yaml_loads_and_errors_still_name_the_signature() {
    let cat = Catalogue::from_yaml_str(
        "{signatures: [{name: a, class: quota, pattern: 'x y'}]}",
        "flow.yaml",
    )
    .expect("valid");
    assert_eq!(cat.len(), 1);
    let e = err("{signatures: [{name: a, class: nope, pattern: x}]}");
    assert_eq!(e.signature(), Some("a"));
}

#[test]
fn load_file_errors_name_the_path() {
    let e =
        Catalogue::load_file(Path::new("/nonexistent/signatures.yaml")).expect_err("missing file");
    assert!(matches!(e, CatalogueError::Io { .. }), "{e:?}");
    assert_eq!(e.origin(), "/nonexistent/signatures.yaml");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/signatures.yaml: cannot read")
    );
    assert!(std::error::Error::source(&e).is_some());

    let dir = std::env::temp_dir().join(format!("failure-signatures-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "signatures:\n  - name: x\n    class: quota\n    pattern: '('\n",
    )
    .expect("write");
    let e = Catalogue::load_file(&path).expect_err("bad regex");
    assert_eq!(e.origin(), path.display().to_string());
    assert_eq!(e.line(), Some(4));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn example_config_loads_and_merges() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/signatures.example.yaml");
    let user = Catalogue::load_file(&path).expect("example config is valid");
    assert!(!user.is_empty());
    let merged = Catalogue::builtin().merged(user.clone());
    for name in user.names() {
        assert!(merged.get(name).is_some(), "{name}");
    }
    // It replaces one built-in and adds the others.
    let replaced = user
        .names()
        .filter(|n| Catalogue::builtin().get(n).is_some())
        .count();
    assert_eq!(replaced, 1);
    assert_eq!(
        merged.len(),
        Catalogue::builtin().len() + user.len() - replaced
    );
    let c = merged
        .classify(
            "2026-07-05T12:00:00Z ERROR Rate limit exceeded: retry later",
            &ctx(),
        )
        .expect("classified");
    assert_eq!(c.signature, "generic-rate-limit-exceeded");
    assert_eq!(
        merged.classify("Rate limit exceeded: retry later", &ctx()),
        None
    );
    let c = merged
        .classify("proxy: upstream pool down (HTTP 503)", &ctx())
        .expect("classified");
    assert_eq!(c.signature, "local-proxy-503");
    assert_eq!(c.class, FailureClass::ServerError);
}

#[test]
fn merge_adds_and_overrides() {
    let builtin = Catalogue::builtin();
    let n = builtin.len();
    let user = Catalogue::from_yaml_str(
        r"
signatures:
  - name: generic-http-429        # replaces the built-in
    class: overloaded
    provider: my-proxy
    pattern: '\bHTTP 429\b'
  - name: my-proxy-busy           # new
    class: overloaded
    provider: my-proxy
    priority: 100
    pattern: 'proxy busy'
",
        "user.yaml",
    )
    .expect("valid");
    let merged = builtin.clone().merged(user);
    assert_eq!(merged.len(), n + 1);
    let names: Vec<&str> = merged.names().collect();
    assert_eq!(
        names[..2],
        ["generic-http-429", "my-proxy-busy"],
        "user first"
    );
    assert_eq!(
        names.iter().filter(|n| **n == "generic-http-429").count(),
        1
    );
    assert_eq!(
        merged.get("generic-http-429").map(|s| s.class()),
        Some(FailureClass::Overloaded)
    );

    let c = merged.classify("HTTP 429", &ctx()).expect("classified");
    assert_eq!(c.signature, "generic-http-429");
    assert_eq!(c.class, FailureClass::Overloaded);
    assert_eq!(c.provider.as_deref(), Some("my-proxy"));

    // The user's high-priority signature beats built-ins in the same text.
    let c = merged
        .classify("'code': 'insufficient_quota'\nproxy busy\n", &ctx())
        .expect("classified");
    assert_eq!(c.signature, "my-proxy-busy");

    // The built-in catalogue itself is unchanged.
    // (A generic built-in counts only with LLM-API context around it.)
    let c = builtin
        .classify("POST /v1/chat/completions\nHTTP 429", &ctx())
        .expect("classified");
    assert_eq!(c.class, FailureClass::RateLimit);
    assert_eq!(builtin.len(), n);
}

#[test]
fn merge_with_empty_and_into_empty() {
    let n = Catalogue::builtin().len();
    assert_eq!(Catalogue::builtin().merged(Catalogue::default()).len(), n);
    assert_eq!(Catalogue::default().merged(Catalogue::builtin()).len(), n);
    let merged = Catalogue::default().merged(Catalogue::builtin());
    assert_eq!(
        merged
            .classify("POST /v1/chat/completions\nHTTP 429", &ctx())
            .map(|c| c.class),
        Some(FailureClass::RateLimit)
    );
}

#[test]
fn user_signatures_win_complete_ties() {
    let base = Catalogue::from_yaml_str(
        "signatures:\n  - name: base\n    class: quota\n    pattern: 'slow'\n",
        "base.yaml",
    )
    .expect("valid");
    let user = Catalogue::from_yaml_str(
        "signatures:\n  - name: mine\n    class: network\n    pattern: 'slow'\n",
        "user.yaml",
    )
    .expect("valid");
    let merged = base.clone().merged(user);
    let c = merged.classify("too slow", &ctx()).expect("classified");
    assert_eq!(c.signature, "mine");
    let c = base.classify("too slow", &ctx()).expect("classified");
    assert_eq!(c.signature, "base");
}

#[test]
fn clones_share_compiled_state_and_classify_identically() {
    let a = Catalogue::builtin();
    let b = a.clone();
    let text = "HTTP 429: The usage limit has been reached. plan_type: team, resets_at: 1780861905";
    assert_eq!(a.classify(text, &ctx()), b.classify(text, &ctx()));
    assert_eq!(a.classify("", &ctx()), None);
}

#[test]
fn errors_are_send_sync_and_catalogue_is_too() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CatalogueError>();
    assert_send_sync::<Catalogue>();
}
