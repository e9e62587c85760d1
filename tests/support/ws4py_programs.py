"""stub"""
CONVERSATION_EXCEPTIONS: dict[str, str] = {}
