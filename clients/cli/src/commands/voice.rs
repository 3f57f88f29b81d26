//! `crm voice-call` (the seed's `/voice-call`): queues a call through the server's call queue
//! and, with `--follow`, prints the transcript live over the `callTranscript` subscription
//! (graphql-transport-ws), then the outcome.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

use super::{Context, print};

const START: &str = "mutation StartVoiceCall($c: ID!, $agent: String) { \
     startVoiceCall(customerId: $c, agent: $agent) { id status agent provider toNumber reason } }";

const CALL: &str = "query Call($id: ID!, $after: Int) { call(id: $id) { id status disposition \
     outcome reason durationSeconds summary segments(afterSeq: $after) { seq role text } } }";

const TRANSCRIPT: &str = "subscription Transcript($id: ID!, $after: Int) { \
     callTranscript(callId: $id, afterSeq: $after) { seq role text } }";

/// Flags of `crm voice-call`.
#[derive(Debug, Args)]
pub(crate) struct VoiceCallArgs {
    /// Id of the customer to call.
    customer_id: String,
    /// The voice agent (default: the one speaking the customer's language).
    #[arg(long)]
    agent: Option<String>,
    /// Print the transcript live until the call ends, then its outcome.
    #[arg(long)]
    follow: bool,
}

fn line(segment: &Value) -> String {
    let role = segment["role"].as_str().unwrap_or("?").to_lowercase();
    format!(
        "{role:>8}: {}",
        segment["text"].as_str().unwrap_or_default()
    )
}

impl VoiceCallArgs {
    /// Queues the call, then follows it if asked.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let data: Value = ctx
            .client
            .execute(START, json!({ "c": self.customer_id, "agent": self.agent }))
            .await?;
        let call = &data["startVoiceCall"];
        let id = call["id"].as_str().unwrap_or_default().to_owned();
        if ctx.json && !self.follow {
            return print(&serde_json::to_string_pretty(&data)?);
        }
        print(&format!(
            "Call {id} queued: agent {} ({}), {}",
            call["agent"].as_str().unwrap_or_default(),
            call["provider"].as_str().unwrap_or_default(),
            call["toNumber"].as_str().unwrap_or_default(),
        ))?;
        if !self.follow {
            return Ok(());
        }
        match ctx.client.ws_endpoint() {
            Some(url) => self.follow_live(ctx, &url, &id).await?,
            None => self.follow_polling(ctx, &id).await?,
        }
        let data: Value = ctx
            .client
            .execute(CALL, json!({ "id": id, "after": i32::MAX }))
            .await?;
        let call = &data["call"];
        if ctx.json {
            return print(&serde_json::to_string_pretty(&data)?);
        }
        let mut outcome = format!(
            "Ended: {}",
            call["disposition"]
                .as_str()
                .unwrap_or("unknown")
                .to_lowercase()
        );
        if let Some(detail) = call["outcome"].as_str() {
            outcome.push_str(&format!(" ({})", detail.replace('_', " ")));
        }
        if let Some(seconds) = call["durationSeconds"].as_f64() {
            outcome.push_str(&format!(", {seconds:.0} s"));
        }
        if let Some(reason) = call["reason"].as_str() {
            outcome.push_str(&format!(" — {reason}"));
        }
        print(&outcome)?;
        if let Some(summary) = call["summary"].as_str() {
            print(summary)?;
        }
        Ok(())
    }

    /// Follows over the `callTranscript` subscription until the server completes it.
    async fn follow_live(&self, ctx: &Context, url: &str, id: &str) -> anyhow::Result<()> {
        let mut request = url
            .into_client_request()
            .context("invalid subscription URL")?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().context("header")?,
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .with_context(|| format!("cannot open {url}"))?;
        let init = json!({ "type": "connection_init", "payload": {
            "Authorization": ctx.client.token().map(|t| format!("Bearer {t}")) } });
        socket.send(Message::text(init.to_string())).await?;
        let subscribe = json!({ "id": "1", "type": "subscribe", "payload": {
            "query": TRANSCRIPT, "variables": { "id": id } } });
        let mut subscribed = false;
        while let Some(message) = socket.next().await {
            let text = match message? {
                Message::Text(text) => text,
                Message::Close(frame) => bail!(
                    "the server closed the subscription{}",
                    frame.map(|f| format!(": {}", f.reason)).unwrap_or_default()
                ),
                _ => continue,
            };
            let message: Value = serde_json::from_str(&text)?;
            match message["type"].as_str() {
                Some("connection_ack") if !subscribed => {
                    socket.send(Message::text(subscribe.to_string())).await?;
                    subscribed = true;
                }
                Some("ping") => {
                    socket
                        .send(Message::text(json!({ "type": "pong" }).to_string()))
                        .await?;
                }
                Some("next") => {
                    if let Some(errors) = message["payload"]["errors"].as_array() {
                        bail!("the subscription failed: {}", Value::Array(errors.clone()));
                    }
                    print(&line(&message["payload"]["data"]["callTranscript"]))?;
                }
                Some("error") => bail!("the subscription failed: {}", message["payload"]),
                Some("complete") => break,
                _ => {}
            }
        }
        let _ = socket.close(None).await;
        Ok(())
    }

    /// Follows by asking for new segments every half second (TLS servers).
    async fn follow_polling(&self, ctx: &Context, id: &str) -> anyhow::Result<()> {
        let mut after = 0;
        loop {
            let data: Value = ctx
                .client
                .execute(CALL, json!({ "id": id, "after": after }))
                .await?;
            for segment in data["call"]["segments"].as_array().into_iter().flatten() {
                print(&line(segment))?;
                after = segment["seq"].as_i64().unwrap_or(i64::from(after)) as i32;
            }
            if data["call"]["status"] == "ENDED" {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
