"""Cloud providers, chosen by configuration: OpenAI (transcription, speech), Anthropic (the LLM brain), Deepgram
(live speech-to-text), ElevenLabs (speech). Each client takes its key as a :class:`pydantic.SecretStr`, never shows
it in ``repr``, and translates the provider's errors into :class:`agents.basma.errors.ProviderError` with the key
removed from any text the provider echoes back."""
