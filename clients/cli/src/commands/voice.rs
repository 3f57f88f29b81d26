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
     callTranscript(callId: $id, afterSeq: $after) { seq role text corrected } }";

/// Reconnections of `--follow` after the connection broke, each resuming after the last seq
/// printed, before it gives up.
const RECONNECTS: u32 = 5;

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
    let corrected = if segment["corrected"] == true {
        "  (corrected)"
    } else {
        ""
    };
    format!(
        "{role:>8}: {}{corrected}",
        segment["text"].as_str().unwrap_or_default()
    )
}

/// How a followed subscription stopped.
enum Stopped {
    /// The server completed it: the call ended.
    Completed,
    /// The connection broke (or the server closed it) before that.
    Broken(anyhow::Error),
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

    /// Follows over the `callTranscript` subscription until the server completes it; a broken
    /// connection is opened again and the subscription resumed after the last seq printed.
    async fn follow_live(&self, ctx: &Context, url: &str, id: &str) -> anyhow::Result<()> {
        let mut last = 0i64;
        let mut broken = 0;
        loop {
            let printed = last;
            match self.subscribe_once(ctx, url, id, &mut last).await? {
                Stopped::Completed => return Ok(()),
                Stopped::Broken(error) => {
                    // A connection that delivered something starts the count afresh.
                    broken = if last > printed { 1 } else { broken + 1 };
                    if broken > RECONNECTS {
                        return Err(error.context(format!(
                            "the transcript connection broke {RECONNECTS} times in a row"
                        )));
                    }
                    eprintln!("(connection lost: {error:#}; resuming after line {last})");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(broken))).await;
                }
            }
        }
    }

    /// One connection's subscription, after `last` (updated as segments arrive). Errors the
    /// server reports end the command; a broken connection is [`Stopped::Broken`].
    async fn subscribe_once(
        &self,
        ctx: &Context,
        url: &str,
        id: &str,
        last: &mut i64,
    ) -> anyhow::Result<Stopped> {
        let mut request = url
            .into_client_request()
            .context("invalid subscription URL")?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().context("header")?,
        );
        let mut socket = match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => socket,
            Err(error) => {
                return Ok(Stopped::Broken(
                    anyhow::Error::new(error).context(format!("cannot open {url}")),
                ));
            }
        };
        let init = json!({ "type": "connection_init", "payload": {
            "Authorization": ctx.client.token().map(|t| format!("Bearer {t}")) } });
        if let Err(error) = socket.send(Message::text(init.to_string())).await {
            return Ok(Stopped::Broken(error.into()));
        }
        let after = (*last > 0).then_some(*last);
        let subscribe = json!({ "id": "1", "type": "subscribe", "payload": {
            "query": TRANSCRIPT, "variables": { "id": id, "after": after } } });
        let mut subscribed = false;
        while let Some(message) = socket.next().await {
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(frame)) => {
                    return Ok(Stopped::Broken(anyhow::anyhow!(
                        "the server closed the subscription{}",
                        frame.map(|f| format!(": {}", f.reason)).unwrap_or_default()
                    )));
                }
                Ok(_) => continue,
                Err(error) => return Ok(Stopped::Broken(error.into())),
            };
            let message: Value = serde_json::from_str(&text)?;
            let sent = match message["type"].as_str() {
                Some("connection_ack") if !subscribed => {
                    subscribed = true;
                    socket.send(Message::text(subscribe.to_string())).await
                }
                Some("ping") => {
                    socket
                        .send(Message::text(json!({ "type": "pong" }).to_string()))
                        .await
                }
                Some("next") => {
                    if let Some(errors) = message["payload"]["errors"].as_array() {
                        bail!("the subscription failed: {}", Value::Array(errors.clone()));
                    }
                    let segment = &message["payload"]["data"]["callTranscript"];
                    print(&line(segment))?;
                    *last = (*last).max(segment["seq"].as_i64().unwrap_or(0));
                    Ok(())
                }
                Some("error") => bail!("the subscription failed: {}", message["payload"]),
                Some("complete") => {
                    let _ = socket.close(None).await;
                    return Ok(Stopped::Completed);
                }
                _ => Ok(()),
            };
            if let Err(error) = sent {
                return Ok(Stopped::Broken(error.into()));
            }
        }
        Ok(Stopped::Broken(anyhow::anyhow!(
            "the connection ended without completing the subscription"
        )))
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
