"""The Streamlit front end of probex: a frame (app.py), a shared sidebar and one module per page."""
