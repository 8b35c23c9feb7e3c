"""Models of login protection, audit and back-channel logout."""
