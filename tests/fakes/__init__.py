"""Local stand-ins for Slack and Microsoft: real HTTP and WebSocket servers on 127.0.0.1 (aiohttp).

They are the only things mocked in the channel tests. They need .venv-rasa's packages (aiohttp,
cryptography, PyJWT); the test modules that use them skip cleanly elsewhere.
"""
