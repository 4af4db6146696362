"""The verification engine: models, static checks, the harness processes, reward and result."""
