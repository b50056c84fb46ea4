"""experts page."""
import streamlit as st

st.title("Experts")
