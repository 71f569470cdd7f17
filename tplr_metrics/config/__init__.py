"""Where points go and where files live: arguments and environment, validated."""
