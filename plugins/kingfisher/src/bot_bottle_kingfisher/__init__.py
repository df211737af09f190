"""bot-bottle-kingfisher: Kingfisher's rules as a bot-bottle DLP detector."""

__version__ = "0.1.0"
