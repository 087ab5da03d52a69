# Runs docs/elixir.md's "Running pools" block through a real BEAM: the block opens its
# ports exactly as written, then each worker is pinged and must report the default LM the
# block gave it (built lazily, so no call and no key is needed).
#
# Usage: DSPEX_EXECUTABLE=PATH elixir tests/elixir/running_pools.exs BLOCK_FILE
# The last line is "elixir docs: N passed, M failed"; exit status 0 only when all passed.

[block_file] = System.argv()
dspex = System.fetch_env!("DSPEX_EXECUTABLE")
{_, _} = Code.eval_string(File.read!(block_file), dspex: dspex)

ports = Enum.filter(Port.list(), fn port ->
  case Port.info(port, :name) do
    {:name, name} -> List.to_string(name) == dspex
    _ -> false
  end
end)

results =
  for {port, index} <- Enum.with_index(ports, 1) do
    Port.command(port, :jiffy.encode(%{"id" => index, "command" => "ping", "args" => %{}}))
    receive do
      {^port, {:data, data}} ->
        reply = :jiffy.decode(data, [:return_maps, :use_nil])
        ok = reply["id"] == index and reply["result"]["lm_model"] == "openai/gpt-4o-mini"
        IO.puts("#{if ok, do: "ok", else: "FAIL"} port #{index}: #{inspect(reply["result"]["lm_model"])}")
        ok
    after
      20_000 -> IO.puts("FAIL port #{index}: no reply"); false
    end
  end

passed = Enum.count(results, & &1)
failed = length(results) - passed + if(length(ports) == 2, do: 0, else: 1)
IO.puts("elixir docs: #{passed} passed, #{failed} failed")
System.halt(if failed == 0, do: 0, else: 1)
