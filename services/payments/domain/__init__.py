"""Pure payment rules: the payment case state machine, money, references."""
