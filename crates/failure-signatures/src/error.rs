//! Errors from loading a signature catalogue.

use std::fmt;

/// Why a signature catalogue could not be loaded.
///
/// Every variant names the `origin` (file path or a caller-chosen label),
/// the 1-based line when it can be determined, and — for per-signature
/// problems — the signature (its name, or `#N` when it has none) and field.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The file could not be read.
    #[error("{origin}: cannot read signature catalogue: {source}")]
    Io {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or has the wrong shape (wrong type, unknown field).
    #[error("{origin}{}: invalid signature catalogue: {message}", At(*line))]
    Yaml {
        origin: String,
        line: Option<usize>,
        message: String,
    },
    /// A required field (`name`, `class`, `pattern`) is missing.
    #[error("{origin}{}: signature {signature}: missing required field `{field}`", At(*line))]
    MissingField {
        origin: String,
        line: Option<usize>,
        signature: String,
        field: &'static str,
    },
    /// `class` is not one of the known failure classes.
    #[error(
        "{origin}{}: signature {signature}: field `class`: unknown class `{class}` (expected one of: rate_limit, quota, overloaded, auth_expired, auth_invalid, network, request_too_large, server_error, billing)",
        At(*line)
    )]
    UnknownClass {
        origin: String,
        line: Option<usize>,
        signature: String,
        class: String,
    },
    /// `pattern` is not a valid regular expression.
    #[error("{origin}{}: signature {signature}: field `pattern`: invalid regex: {message}", At(*line))]
    InvalidPattern {
        origin: String,
        line: Option<usize>,
        signature: String,
        message: String,
    },
    /// Two signatures in the same catalogue share a name.
    #[error("{origin}{}: signature {signature}: field `name`: duplicate name (first defined{})", At(*line), AtLine(*first_line))]
    DuplicateName {
        origin: String,
        line: Option<usize>,
        signature: String,
        first_line: Option<usize>,
    },
    /// A field has an unacceptable value (empty name, pattern matching empty text, ...).
    #[error("{origin}{}: signature {signature}: field `{field}`: {message}", At(*line))]
    InvalidField {
        origin: String,
        line: Option<usize>,
        signature: String,
        field: &'static str,
        message: String,
    },
}

impl CatalogueError {
    /// The origin (file path or label) the error refers to.
    pub fn origin(&self) -> &str {
        match self {
            CatalogueError::Io { origin, .. }
            | CatalogueError::Yaml { origin, .. }
            | CatalogueError::MissingField { origin, .. }
            | CatalogueError::UnknownClass { origin, .. }
            | CatalogueError::InvalidPattern { origin, .. }
            | CatalogueError::DuplicateName { origin, .. }
            | CatalogueError::InvalidField { origin, .. } => origin,
        }
    }

    /// The 1-based line the error refers to, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            CatalogueError::Io { .. } => None,
            CatalogueError::Yaml { line, .. }
            | CatalogueError::MissingField { line, .. }
            | CatalogueError::UnknownClass { line, .. }
            | CatalogueError::InvalidPattern { line, .. }
            | CatalogueError::DuplicateName { line, .. }
            | CatalogueError::InvalidField { line, .. } => *line,
        }
    }

    /// The signature (name or `#N`) the error refers to, when it is about one.
    pub fn signature(&self) -> Option<&str> {
        match self {
            CatalogueError::Io { .. } | CatalogueError::Yaml { .. } => None,
            CatalogueError::MissingField { signature, .. }
            | CatalogueError::UnknownClass { signature, .. }
            | CatalogueError::InvalidPattern { signature, .. }
            | CatalogueError::DuplicateName { signature, .. }
            | CatalogueError::InvalidField { signature, .. } => Some(signature),
        }
    }
}

/// Formats an optional line as `:LINE` (or nothing when unknown).
struct At(Option<usize>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

/// Formats an optional line as ` at line LINE` (or nothing when unknown).
struct AtLine(Option<usize>);

impl fmt::Display for AtLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " at line {line}"),
            None => Ok(()),
        }
    }
}
