"""Content filters asked before the final answer at the end of DATA (Rspamd)."""
