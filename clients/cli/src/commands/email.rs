//! `crm send-email` (the seed's `/send-email`): renders a template for a customer and sends it
//! through the server's configured sender, as a job.

use clap::Args;
use serde_json::{Value, json};

use super::{Context, print};

const SEND: &str = "mutation SendEmail($c: ID!, $t: String!, $v: JSON) { \
     sendEmail(customerId: $c, template: $t, variables: $v) { id status to subject template } }";

const PREVIEW: &str = "query PreviewEmail($c: ID!, $t: String!, $v: JSON) { \
     previewEmail(customerId: $c, template: $t, variables: $v) { language subject text } }";

/// Flags of `crm send-email`.
#[derive(Debug, Args)]
pub(crate) struct SendEmailArgs {
    /// Id of the customer.
    customer_id: String,
    /// The template (`follow-up`, `nurture-1`, … or one from the server's templates folder).
    template: String,
    /// A variable for the template (`vars.NAME`); repeat for several.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Show the rendered email instead of sending it.
    #[arg(long)]
    preview: bool,
}

impl SendEmailArgs {
    /// Sends (or previews) the email.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let mut variables = serde_json::Map::new();
        for pair in &self.vars {
            let Some((name, value)) = pair.split_once('=') else {
                anyhow::bail!("--var takes NAME=VALUE, not `{pair}`");
            };
            variables.insert(name.trim().to_owned(), Value::String(value.to_owned()));
        }
        let vars = json!({ "c": self.customer_id, "t": self.template, "v": variables });
        if self.preview {
            let data: Value = ctx.client.execute(PREVIEW, vars).await?;
            if ctx.json {
                return print(&serde_json::to_string_pretty(&data)?);
            }
            let email = &data["previewEmail"];
            return print(&format!(
                "Subject: {}\nLanguage: {}\n\n{}",
                email["subject"].as_str().unwrap_or_default(),
                email["language"].as_str().unwrap_or_default(),
                email["text"].as_str().unwrap_or_default()
            ));
        }
        let data: Value = ctx.client.execute(SEND, vars).await?;
        if ctx.json {
            return print(&serde_json::to_string_pretty(&data)?);
        }
        let email = &data["sendEmail"];
        print(&format!(
            "Email {} to {} queued: {}",
            email["id"].as_str().unwrap_or_default(),
            email["to"].as_str().unwrap_or_default(),
            email["subject"].as_str().unwrap_or_default()
        ))
    }
}
