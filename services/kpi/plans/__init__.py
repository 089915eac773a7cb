"""Monthly revenue plans and marketing spend: entered over HTTP, spread over the days of a
period by the reads."""
