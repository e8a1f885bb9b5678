"""Bots ingress runs for pushed channels (one Discord bot per Discord instance).

`host.BotHost` decides which bots run in this replica (a lease per bot in the database, taken over when its owner
dies) and starts, restarts and stops them as instances change; `discord_bot.DiscordBot` is one discord.py client.
A bot turns each gateway event into a `Received` (`receivers.discord`) and hands it to the shared accept path, so
de-duplication, ordering, dead letters and traces are the webhooks' own.
"""
