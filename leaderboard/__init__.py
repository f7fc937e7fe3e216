"""The Streamlit leaderboard: reads the run store (never writes it) and shows which claims are verified."""
