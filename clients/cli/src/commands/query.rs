//! `crm query`: raw GraphQL passthrough.

use std::{fs, io};

use anyhow::{Context as _, ensure};
use clap::Args;
use serde_json::{Value, json};

use super::{Context, print};
use crate::client::{CliError, graphql_errors};

/// Arguments of `crm query`.
#[derive(Debug, Args)]
#[command(
    after_help = "The response is always printed as JSON; the exit code is 1 \
                        when it contains GraphQL errors."
)]
pub(crate) struct QueryArgs {
    /// GraphQL document, or @FILE to read it from a file (@- reads stdin).
    #[arg(value_name = "QUERY|@FILE")]
    document: String,
    /// Variables as a JSON object, or @FILE to read them from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    variables: Option<String>,
}

impl QueryArgs {
    /// Sends the document and prints the whole response.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let document = read_arg(&self.document)?;
        let variables = match &self.variables {
            Some(arg) => parse_variables(&read_arg(arg)?)?,
            None => json!({}),
        };
        let body = ctx.client.execute_raw(&document, variables).await?;
        print(&serde_json::to_string_pretty(&body)?)?;
        let errors = graphql_errors(&body);
        ensure!(errors.is_empty(), CliError::Graphql(errors));
        Ok(())
    }
}

/// The argument itself, or the content of the file it names as `@FILE`.
fn read_arg(arg: &str) -> anyhow::Result<String> {
    match arg.strip_prefix('@') {
        Some("-") => io::read_to_string(io::stdin()).context("cannot read stdin"),
        Some(path) => fs::read_to_string(path).with_context(|| format!("cannot read {path}")),
        None => Ok(arg.to_owned()),
    }
}

fn parse_variables(text: &str) -> anyhow::Result<Value> {
    let value: Value = serde_json::from_str(text).context("--variables is not valid JSON")?;
    ensure!(value.is_object(), "--variables must be a JSON object");
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_must_be_a_json_object() {
        assert_eq!(
            parse_variables(r#"{"id":"c1"}"#).unwrap(),
            json!({"id": "c1"})
        );
        assert!(parse_variables("[1]").is_err());
        assert!(parse_variables("{").is_err());
    }

    #[test]
    fn arguments_are_literal_unless_prefixed_with_at() {
        assert_eq!(read_arg("{ a }").unwrap(), "{ a }");
        assert!(read_arg("@/nonexistent/query.graphql").is_err());
    }
}
