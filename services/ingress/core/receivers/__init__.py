"""Channel receivers: what each channel contributes to the accept path.

A receiver authenticates a channel's request and parses it into one `Received` (a canonical message, an own-send
record, or an ignored event with its reason): `base` has the seam, one module per channel implements it, and
`registry` maps channels to webhook receivers. Everything after that — de-duplication, the inbox, ordering,
dispatch, dead letters, traces — is the shared accept path in `services.ingress.core.accept`. Pushed channels
(Discord bots, `services.ingress.core.bots`) build the message themselves and enter the same path.
"""
