"""Abstract contracts the five plugin families implement.

Import from the family's module (``bot_bottle.contracts.backend`` ...); this
package imports nothing itself so that loading one contract stays cheap.
"""
