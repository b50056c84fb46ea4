"""search page."""
import streamlit as st

st.title("Search")
