"""kimi-dagster: very large prompt batches through the Kimi (Moonshot AI) API from Dagster, at
the account's rate limits, with every input, output, token and cost kept in DuckDB."""
