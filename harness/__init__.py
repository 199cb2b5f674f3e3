"""What the benchmark, the reliability battery, the tests and the doc generator share: where
the repository is (`paths`), starting and stopping servers (`launch`, `gateway`), driving load
(`load`), one percentile (`stats`), raw HTTP over a socket (`raw_http`) and the generated
sections of the docs (`markers`). It imports none of its users."""
