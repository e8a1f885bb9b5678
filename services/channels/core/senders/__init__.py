"""Channel senders: what each channel contributes to everything that goes out.

`base` has the seam (the `ChannelSender` protocol and the channel-neutral errors the outbox understands); one
module per channel implements it (`whatsapp` through the Evolution API, `discord` through Discord's REST API, `slack`
through Slack's Web API). The outbox, the idempotency keys, reconciliation and traces are shared and never name a
channel.
"""
