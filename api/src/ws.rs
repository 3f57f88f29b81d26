//! GraphQL subscriptions over WebSocket at `/graphql/ws` (`graphql-transport-ws`, and the older
//! `graphql-ws`).
//!
//! - The client authenticates in `connection_init` with `{"Authorization": "Bearer <token or
//!   API key>"}` (browsers cannot set headers on a WebSocket; a bare credential and an
//!   `Authorization` header on the upgrade request are accepted too). Without valid credentials
//!   the connection is closed before any operation runs.
//! - Only subscriptions are served here: queries and mutations go to `POST /graphql`, where every
//!   request is rate-limited per caller.
//! - The credential is checked again on every `subscribe`, so a revoked key or an expired token
//!   cannot start new subscriptions on an old connection; each operation gets fresh DataLoaders.

use crate::{
    audit::RequestId,
    auth::Authenticator,
    error::code,
    graphql::{ApiContext, AppSchema},
};
use async_graphql::{
    Data, ErrorExtensions as _, Executor, Request, Response,
    futures_util::stream::{self, BoxStream, StreamExt as _},
    parser::types::OperationType,
};
use std::sync::{Arc, OnceLock};

/// The schema as served over one WebSocket connection.
#[derive(Clone)]
pub(crate) struct SubscriptionsOnly {
    schema: AppSchema,
    context: ApiContext,
    authenticator: Authenticator,
    /// The credential given at `connection_init` (set once, by the init handler).
    credential: Arc<OnceLock<String>>,
}

fn refusal(message: &str, code: &'static str) -> Response {
    let error = async_graphql::Error::new(message).extend_with(|_, ext| ext.set("code", code));
    Response::from_errors(vec![error.into_server_error(Default::default())])
}

impl SubscriptionsOnly {
    /// The executor of one connection.
    pub(crate) fn new(
        schema: AppSchema,
        context: ApiContext,
        authenticator: Authenticator,
    ) -> Self {
        Self {
            schema,
            context,
            authenticator,
            credential: Arc::new(OnceLock::new()),
        }
    }

    /// Checks the credential of `connection_init`; on success, remembers it for every
    /// `subscribe`. `header` is the upgrade request's `Authorization`, if any.
    pub(crate) async fn init(
        &self,
        payload: &serde_json::Value,
        header: Option<String>,
    ) -> async_graphql::Result<Data> {
        let credential = ["Authorization", "authorization", "authToken"]
            .iter()
            .find_map(|key| payload.get(*key).and_then(|v| v.as_str()))
            .map(|c| {
                if c.contains(' ') {
                    c.to_owned()
                } else {
                    format!("Bearer {c}")
                }
            })
            .or(header)
            .unwrap_or_default();
        if let Err(error) = self
            .authenticator
            .authenticate(
                Some(&credential)
                    .filter(|c| !c.is_empty())
                    .map(String::as_str),
            )
            .await
        {
            tracing::warn!(target: "crm::security", reason = %error, "WebSocket authentication failed.");
            return Err(async_graphql::Error::new(error.to_string()));
        }
        let _ = self.credential.set(credential);
        Ok(Data::default())
    }
}

impl Executor for SubscriptionsOnly {
    async fn execute(&self, _request: Request) -> Response {
        refusal(
            "only subscriptions are served at /graphql/ws; send queries and mutations to POST /graphql",
            code::BAD_REQUEST,
        )
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let subscriptions_only = request.parsed_query().map(|document| {
            document
                .operations
                .iter()
                .all(|(_, op)| op.node.ty == OperationType::Subscription)
        });
        match subscriptions_only {
            Err(error) => {
                return stream::once(async move { Response::from_errors(vec![error]) }).boxed();
            }
            Ok(false) => {
                return stream::once(async {
                    refusal(
                        "only subscriptions are served at /graphql/ws; send queries and mutations to POST /graphql",
                        code::BAD_REQUEST,
                    )
                })
                .boxed();
            }
            Ok(true) => {}
        }
        let this = self.clone();
        stream::once(async move {
            let credential = this.credential.get().cloned();
            match this.authenticator.authenticate(credential.as_deref()).await {
                Ok(principal) => {
                    let request = this
                        .context
                        .loaders()
                        .attach(request)
                        .data(principal)
                        .data(RequestId(uuid::Uuid::new_v4().to_string()));
                    Executor::execute_stream(&this.schema, request, session_data)
                }
                Err(error) => {
                    tracing::warn!(target: "crm::security", reason = %error, "WebSocket subscribe refused.");
                    stream::once(async move {
                        refusal(&error.to_string(), code::UNAUTHENTICATED)
                    })
                    .boxed()
                }
            }
        })
        .flatten()
        .boxed()
    }
}
