//! The GitOps hand-off: the engine's install manifest from the bundle applied on the first k3s
//! server and waited for ([`install`], [`ready`]), then everything groundwork applies after it,
//! as typed values rendered to YAML.
//!
//! [`documents`] gives them in apply order: the site contract ([`contract`]), then the
//! engine's repository access, then its sync objects ([`sync`]). Each [`Document`] has its
//! real YAML (for apply) and a masked one (for plans: a Secret's values as
//! `<secret: N bytes>`); its `Debug` shows the masked one only.

pub mod contract;
pub mod install;
pub mod objects;
pub mod ready;
pub mod sync;
pub mod yaml;

use std::fmt;

use crate::answers::model::Answers;
use crate::state::Secrets;
use objects::{Object, Sensitive};

/// Why the hand-off cannot be rendered. Messages name answer fields and secrets.toml keys,
/// never a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("{field}: {message}")]
    Answer { field: String, message: String },
    #[error("secrets.toml has no [{table}] {key}: `groundwork apply` generates it before the hand-off")]
    MissingSecret { table: String, key: String },
    #[error("secrets.toml [{table}] {key}: {why}")]
    BadSecret { table: String, key: String, why: String },
}

impl HandoffError {
    pub fn answer(field: impl Into<String>, message: impl Into<String>) -> Self {
        HandoffError::Answer { field: field.into(), message: message.into() }
    }
}

/// When a document is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The site contract: its namespace, ConfigMap and Secrets, and their copies.
    Contract,
    /// The engine's access to the repository: Secret, known hosts, Flux's site variables.
    Repository,
    /// GitRepository + Kustomization, or Application: the engine starts syncing.
    Sync,
}

/// One rendered object.
#[derive(Clone, PartialEq)]
pub struct Document {
    pub stage: Stage,
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub is_secret: bool,
    yaml: String,
    masked: String,
}

impl Document {
    fn new(stage: Stage, o: &Object) -> Document {
        let m = o.metadata();
        Document {
            stage,
            kind: o.kind(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            is_secret: o.is_secret(),
            yaml: o.to_yaml(),
            masked: o.to_masked_yaml(),
        }
    }

    /// The document to apply, secret values and all: for `kubectl apply -f -` only.
    pub fn yaml(&self) -> &str {
        &self.yaml
    }

    /// The document as a plan shows it.
    pub fn masked(&self) -> &str {
        &self.masked
    }

    /// `Kind namespace/name`, as a plan row names it.
    pub fn title(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("stage", &self.stage)
            .field("title", &self.title())
            .field("masked", &self.masked)
            .finish()
    }
}

/// The typed objects of the hand-off in apply order, with the https token given (`None`:
/// none, or an ssh repository).
pub fn objects_with_token(
    a: &Answers,
    secrets: &Secrets,
    token: Option<Sensitive>,
) -> Result<Vec<(Stage, Object)>, HandoffError> {
    let c = contract::contract(a, secrets)?;
    let mut out: Vec<(Stage, Object)> = c.objects().into_iter().map(|o| (Stage::Contract, o)).collect();
    if let Some(g) = &a.gitops {
        let repo = sync::RepoUrl::parse(&g.repository).map_err(|e| HandoffError::answer("gitops.repository", e))?;
        let access = sync::Access::with_token(g, &repo, secrets, token)?;
        for o in sync::objects(&a.site.name, g, &repo, &access, &c.config) {
            let stage = match o {
                Object::GitRepository(_) | Object::Kustomization(_) | Object::Application(_) => Stage::Sync,
                _ => Stage::Repository,
            };
            out.push((stage, o));
        }
    }
    Ok(out)
}

/// Every document of the hand-off, in apply order (the token of an https repository read
/// from its file or variable). Without `[gitops]`: the site contract alone.
pub fn documents(a: &Answers, secrets: &Secrets) -> Result<Vec<Document>, HandoffError> {
    let token = match &a.gitops {
        Some(g) => sync::read_token(g)?,
        None => None,
    };
    documents_with_token(a, secrets, token)
}

/// As [`documents`], with the https token given.
pub fn documents_with_token(
    a: &Answers,
    secrets: &Secrets,
    token: Option<Sensitive>,
) -> Result<Vec<Document>, HandoffError> {
    Ok(objects_with_token(a, secrets, token)?.iter().map(|(stage, o)| Document::new(*stage, o)).collect())
}

/// The documents as one multi-document YAML stream, secret values and all.
pub fn stream(docs: &[Document]) -> String {
    docs.iter().map(|d| format!("---\n{}", d.yaml)).collect()
}

/// The documents as a plan shows them.
pub fn masked_stream(docs: &[Document]) -> String {
    docs.iter().map(|d| format!("---\n{}", d.masked)).collect()
}
