"""Stand-ins the tests, benchmarks and demos use: throwaway identities, tiny builds."""
